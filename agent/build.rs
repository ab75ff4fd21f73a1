//! The agent's release version: TASKNODE_VERSION when `tasknode-dist build` sets it, else the
//! crate version. It is embedded as the version marker the console and tasknode-dist read.

fn main() {
    println!("cargo:rerun-if-env-changed=TASKNODE_VERSION");
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
}
