//! include/shmkit.h is what cbindgen makes of src/lib.rs: a change to the ABI that
//! forgot the header fails here. Regenerate with
//! `SHMKIT_WRITE_HEADER=1 cargo test -p shmkit-c --test header`.

use std::path::Path;

#[test]
fn the_committed_header_is_what_cbindgen_generates() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = crate_dir.join("../../include/shmkit.h");
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let generated = String::from_utf8(generated).expect("UTF-8");
    if std::env::var_os("SHMKIT_WRITE_HEADER").is_some() {
        std::fs::write(&header, &generated).expect("write include/shmkit.h");
    }
    let committed = std::fs::read_to_string(&header).unwrap_or_default();
    assert!(
        committed == generated,
        "include/shmkit.h is stale: regenerate it with \
         SHMKIT_WRITE_HEADER=1 cargo test -p shmkit-c --test header"
    );
}
