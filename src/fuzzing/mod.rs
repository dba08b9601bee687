//! The fuzz targets' bodies: one function per target of fuzz/Cargo.toml,
//! named as the target. `fuzz/fuzz_targets/<name>.rs` drives
//! `fuzzing::<name>` under libFuzzer (scripts/fuzz.sh), and this module's
//! unit tests replay the committed seeds (`fuzz/seeds/<name>/`) and
//! regressions (`fuzz/regressions/<name>/`) through the same functions, in
//! the ordinary `cargo test`.

mod http;
mod media;
mod rtmp;
mod webrtc;
mod wire;

pub use http::{acme_certs, api_bodies, forwarded, graphql_request, http_head, playback_tokens};
pub use media::{cc_data, flv_tags, sei, ts_demux};
pub use rtmp::{rtmp_player, rtmp_push, rtmp_session};
pub use webrtc::{webrtc_peer_bytes, whip_media};
pub use wire::{link_framing, proxy_protocol, srt_streamid};

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::path::{Path, PathBuf};

    /// A target's body.
    type Target = fn(&[u8]);

    /// Every target, by its `[[bin]]` name in fuzz/Cargo.toml.
    const TARGETS: &[(&str, Target)] = &[
        ("acme_certs", super::acme_certs),
        ("api_bodies", super::api_bodies),
        ("cc_data", super::cc_data),
        ("flv_tags", super::flv_tags),
        ("forwarded", super::forwarded),
        ("graphql_request", super::graphql_request),
        ("http_head", super::http_head),
        ("link_framing", super::link_framing),
        ("playback_tokens", super::playback_tokens),
        ("proxy_protocol", super::proxy_protocol),
        ("rtmp_player", super::rtmp_player),
        ("rtmp_push", super::rtmp_push),
        ("rtmp_session", super::rtmp_session),
        ("sei", super::sei),
        ("srt_streamid", super::srt_streamid),
        ("ts_demux", super::ts_demux),
        ("webrtc_peer_bytes", super::webrtc_peer_bytes),
        ("whip_media", super::whip_media),
    ];

    /// The input directories, under fuzz/, each with one subdirectory per
    /// target (missing when a target has none).
    const INPUTS: [&str; 2] = ["seeds", "regressions"];

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    /// The targets cargo-fuzz builds: the `name = "..."` lines of
    /// fuzz/Cargo.toml but the package's own.
    fn declared_targets() -> BTreeSet<String> {
        let path = fuzz_dir().join("Cargo.toml");
        let toml = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        toml.lines()
            .filter_map(|l| l.trim().strip_prefix("name = \"")?.strip_suffix('"'))
            .filter(|n| *n != "banyan-fuzz")
            .map(String::from)
            .collect()
    }

    /// The entries of `dir`, sorted; none if it does not exist.
    fn entries(dir: &Path) -> Vec<PathBuf> {
        let Ok(rd) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut v: Vec<PathBuf> = rd
            .map(|e| {
                e.unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                    .path()
            })
            .collect();
        v.sort();
        v
    }

    fn panic_message(p: &(dyn std::any::Any + Send)) -> &str {
        p.downcast_ref::<&str>()
            .copied()
            .or_else(|| p.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("a panic")
    }

    #[test]
    fn every_seed_and_regression_replays_without_a_panic() {
        let known: BTreeSet<String> = TARGETS.iter().map(|(n, _)| n.to_string()).collect();
        assert_eq!(known.len(), TARGETS.len(), "a target listed twice");
        let declared = declared_targets();
        assert!(
            known == declared,
            "[[bin]]s of fuzz/Cargo.toml missing here: {:?}; missing there: {:?}",
            declared.difference(&known).collect::<Vec<_>>(),
            known.difference(&declared).collect::<Vec<_>>()
        );
        let fuzz = fuzz_dir();
        for input in INPUTS {
            for dir in entries(&fuzz.join(input)) {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                assert!(
                    known.contains(name.as_ref()),
                    "{}: no such target",
                    dir.display()
                );
            }
        }
        let mut replayed = 0;
        let mut failed = Vec::new();
        for (name, target) in TARGETS {
            for input in INPUTS {
                for file in entries(&fuzz.join(input).join(name)) {
                    let data =
                        fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                    if let Err(p) = catch_unwind(AssertUnwindSafe(|| target(&data))) {
                        failed.push(format!("{}: {}", file.display(), panic_message(&*p)));
                    }
                    replayed += 1;
                }
            }
        }
        assert!(
            replayed > 0,
            "no seed or regression under {}",
            fuzz.display()
        );
        assert!(failed.is_empty(), "panicked on:\n{}", failed.join("\n"));
    }
}
