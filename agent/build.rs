//! The agent's release version: TASKNODE_VERSION when `tasknode-dist build` sets it, else the
//! crate version. It is embedded as the version marker the console and tasknode-dist read.
//!
//! TASKNODE_TRUSTED_KEYS: the update-manifest public keys (hex, comma-separated) the agent
//! trusts; `tasknode-dist build` sets it from the release keys.
//!
//! TASKNODE_TEST_EXIT_AFTER_SECS: test builds only (see `env::TEST_EXIT_AFTER_SECS`).

fn main() {
    println!("cargo:rerun-if-env-changed=TASKNODE_VERSION");
    println!("cargo:rerun-if-env-changed=TASKNODE_TRUSTED_KEYS");
    println!("cargo:rerun-if-env-changed=TASKNODE_TEST_EXIT_AFTER_SECS");
    if let Ok(secs) = std::env::var("TASKNODE_TEST_EXIT_AFTER_SECS")
        && secs.parse::<u64>().is_err()
    {
        panic!("TASKNODE_TEST_EXIT_AFTER_SECS={secs:?}: give whole seconds");
    }
    let version = std::env::var("TASKNODE_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned());
    let valid = version
        .split('.')
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if !valid {
        panic!("TASKNODE_VERSION={version:?}: use numbers separated by dots, e.g. 1.4.0");
    }
    println!("cargo:rustc-env=TASKNODE_AGENT_VERSION={version}");

    let keys = std::env::var("TASKNODE_TRUSTED_KEYS").unwrap_or_default();
    for key in keys.split(',').filter(|k| !k.is_empty()) {
        if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
            panic!(
                "TASKNODE_TRUSTED_KEYS: {key:?} is not an ed25519 public key in hex (64 digits)"
            );
        }
    }
    println!("cargo:rustc-env=TASKNODE_BUILT_IN_KEYS={keys}");
    println!(
        "cargo:rustc-env=TASKNODE_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
}
