//! Links libsrt through pkg-config (`srt.pc`, from libsrt-openssl-dev on Debian).

fn main() {
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("1.5")
        .probe("srt")
    {
        panic!("libsrt >= 1.5 not found through pkg-config (install libsrt-openssl-dev): {e}");
    }
}
