//! ffmpeg publishers that encode a live test pattern as they send it (the
//! media-comparing tests publish the pre-encoded source clip instead).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// An ffmpeg publisher; killed on drop.
pub struct Publisher(pub Child);

impl Publisher {
    /// `seconds` of 320x240 25 fps H.264 and AAC as FLV to an RTMP(S) `url`.
    pub fn start(url: &str, seconds: u32) -> Publisher {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args([
                "-g",
                "25",
                "-bf",
                "0",
                "-c:a",
                "aac",
                "-t",
                &seconds.to_string(),
            ])
            .args(["-f", "flv", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg");
        Publisher(child)
    }

    /// `seconds` of 320x240 25 fps H.264 (no audio) as MPEG-TS to an SRT
    /// `url`.
    pub fn srt(url: &str, seconds: u32) -> Publisher {
        let child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-tune",
                "zerolatency",
            ])
            .args(["-g", "25", "-bf", "0", "-t", &seconds.to_string()])
            .args(["-f", "mpegts", url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ffmpeg");
        Publisher(child)
    }

    /// The exit status if it ends within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if let Some(s) = self.0.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
