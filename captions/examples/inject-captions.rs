//! Inserts CEA-608/708 captions into a raw H.264 Annex B stream.
//!
//! `cargo run -p banyan-captions --example inject-captions -- IN.h264 OUT.h264 SCRIPT.txt [FPS]`
//!
//! Every access unit gets one SEI NAL unit (ATSC A/53 `GA94` `cc_data`)
//! before its first slice; the script format is described in
//! `banyan_captions::inject`. The input must be in display order (no
//! B-frames), one picture per access unit, at FPS (default 30).

use banyan_captions::inject::{access_units, cc_data_bytes, inject_annexb, sei_nal, Script};

fn main() {
    if let Err(e) = run() {
        eprintln!("inject-captions: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, script, rest @ ..] = &args[..] else {
        return Err("usage: inject-captions IN.h264 OUT.h264 SCRIPT.txt [FPS]".into());
    };
    let fps: u32 = match rest.first() {
        Some(f) => f.parse().map_err(|_| format!("bad fps {f}"))?,
        None => 30,
    };
    let stream = std::fs::read(input).map_err(|e| format!("{input}: {e}"))?;
    let text = std::fs::read_to_string(script).map_err(|e| format!("{script}: {e}"))?;
    let script = Script::parse(&text)?;
    let aus = access_units(&stream);
    let frames = script.render(aus.len(), fps)?;
    let sei: Vec<Option<Vec<u8>>> = frames
        .iter()
        .map(|t| Some(sei_nal(&cc_data_bytes(t, (t.len() / 3) as u8))))
        .collect();
    let out = inject_annexb(&aus, &sei);
    std::fs::write(output, out).map_err(|e| format!("{output}: {e}"))?;
    eprintln!(
        "inject-captions: {} access units, {} captions",
        aus.len(),
        script.captions.len()
    );
    Ok(())
}
