//! The agent's RPM through dnf, as a host installs it: from the signed repository a real
//! console serves with `--dist` (gpgcheck and repo_gpgcheck on), into a throwaway root where the
//! scriptlets run. Install, upgrade and erase; tampered packages, metadata and foreign keys
//! refused; and the same over HTTPS from a console with its own CA, set up by the command the
//! console prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::Value;
use tasknode_render::arch::Arch;
use tasknode_tests::releases::{EPOCH, agent_version_in_root, fixture, ok, rpm_path, run};
use tasknode_tests::sandbox::{Os, Sandbox, require_root};
use tasknode_tests::{
    Console, aarch64, build_release_at, dist_json, install_binary, stderr, which,
};

/// A throwaway root for dnf: the sandbox's busybox system, with shadow's tools and systemctl,
/// recorded in its rpm database as one package providing what the agent's RPM requires.
fn dnf_root(os: Os) -> Sandbox {
    let sb = Sandbox::new(os);
    sb.add_program("groupadd");
    sb.add_program("systemctl");
    let spec_dir = tempfile::tempdir().unwrap();
    let spec = spec_dir.path().join("base.spec");
    std::fs::write(
        &spec,
        "Name: sandbox-base\nVersion: 1\nRelease: 1\nSummary: the sandbox's base system\n\
         License: MIT\nBuildArch: noarch\n\
         Provides: /bin/sh shadow-utils systemd chkconfig initscripts\n\
         %description\nbusybox, shadow's user tools and systemctl, copied from the host\n%files\n",
    )
    .unwrap();
    ok(Command::new(which("rpmbuild"))
        .arg("--define")
        .arg(format!("_topdir {}", spec_dir.path().display()))
        .arg("-bb")
        .arg(&spec));
    let base = spec_dir
        .path()
        .join("RPMS/noarch/sandbox-base-1-1.noarch.rpm");
    ok(Command::new("rpm")
        .arg("--root")
        .arg(sb.root())
        .args(["-i", "--justdb", "--nodeps"])
        .arg(&base));
    sb
}

fn dnf(sb: &Sandbox, console: &Console, args: &[&str]) -> Output {
    let repo = console
        .http()
        .get(format!("{}/yum/al8/tasknode.repo", console.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    dnf_with_repo(sb, &repo, args)
}

/// dnf on `sb` with `repo` as its only .repo file.
fn dnf_with_repo(sb: &Sandbox, repo: &str, args: &[&str]) -> Output {
    let reposd = sb.path("/tmp/reposd");
    std::fs::create_dir_all(&reposd).unwrap();
    std::fs::write(reposd.join("tasknode.repo"), repo).unwrap();
    run(Command::new(which("dnf"))
        .arg("-y")
        .arg(format!("--installroot={}", sb.root().display()))
        .args(["--releasever=8", "--setopt=install_weak_deps=False"])
        .arg(format!("--setopt=reposdir={}", reposd.display()))
        .arg(format!(
            "--setopt=cachedir={}",
            sb.path("/tmp/dnf-cache").display()
        ))
        .args(args))
}

#[test]
fn dnf_installs_upgrades_and_erases_the_agent_from_the_signed_repository() {
    if !require_root() {
        return;
    }
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    build_release_at(out.path(), &f.keys, &f.v1.0, &f.v1.1, "al8", EPOCH);
    let console = Console::start(&["--dist", out.path().to_str().unwrap()]);
    let sb = dnf_root(Os::Alinux3);

    let o = dnf(&sb, &console, &["install", "tasknode"]);
    assert!(
        o.status.success(),
        "dnf install: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    assert_eq!(agent_version_in_root(&sb), format!("tasknode {}", f.v1.0));
    // The man page renders, and bash completes from the installed script.
    let page = ok(Command::new(which("man"))
        .env_remove("MAN_KEEP_FORMATTING")
        .arg("-l")
        .arg(sb.path("/usr/share/man/man1/tasknode-enroll.1.gz")));
    assert!(page.contains("--password-stdin"), "{page}");
    let offers = ok(Command::new(which("bash"))
        .args(["--norc", "--noprofile", "-c"])
        .arg(r#"source "$1"; COMP_WORDS=(tasknode do); COMP_CWORD=1; _tasknode tasknode do tasknode; echo "${COMPREPLY[@]}""#)
        .arg("bash")
        .arg(sb.path("/usr/share/bash-completion/completions/tasknode")));
    assert_eq!(offers.trim(), "doctor");
    // %pre made the user, %post enabled the unit (systemctl works offline in a root).
    let passwd = std::fs::read_to_string(sb.path("/etc/passwd")).unwrap();
    assert!(passwd.contains("admin:x:"), "{passwd}");
    let wants = sb.path("/etc/systemd/system/multi-user.target.wants/tasknode.service");
    assert!(
        wants.is_symlink(),
        "the service was not enabled: {}",
        stderr(&o)
    );
    let conf = sb.path("/etc/tasknode/tasknode.conf");
    assert_eq!(tasknode_tests::mode_of(&conf), 0o600);
    let admin_uid = passwd
        .lines()
        .find(|l| l.starts_with("admin:"))
        .and_then(|l| l.split(':').nth(2))
        .unwrap()
        .parse::<u32>()
        .unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&conf).unwrap().uid(), admin_uid);
    let rpm_q =
        ok(Command::new("rpm")
            .arg("--root")
            .arg(sb.root())
            .args(["-q", "gpg-pubkey", "tasknode"]));
    assert!(
        rpm_q.contains("gpg-pubkey-"),
        "dnf imported the key: {rpm_q}"
    );

    // The operator's change to the config survives an upgrade.
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("# kept across upgrades\n");
    std::fs::write(&conf, &text).unwrap();
    build_release_at(out.path(), &f.keys, &f.v2.0, &f.v2.1, "al8", EPOCH);
    let o = dnf(&sb, &console, &["upgrade", "tasknode"]);
    assert!(
        o.status.success(),
        "dnf upgrade: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    assert_eq!(agent_version_in_root(&sb), format!("tasknode {}", f.v2.0));
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), text);
    assert!(wants.is_symlink(), "an upgrade keeps the service enabled");

    let o = dnf(&sb, &console, &["remove", "tasknode"]);
    assert!(o.status.success(), "dnf remove: {}", stderr(&o));
    assert!(!sb.path("/usr/bin/tasknode").exists());
    assert!(!sb.path("/usr/lib/systemd/system/tasknode.service").exists());
    assert!(
        !wants.exists() && !wants.is_symlink(),
        "%preun disabled the service"
    );
    // An edited config is kept as .rpmsave, as rpm does for every changed config file.
    assert!(sb.path("/etc/tasknode/tasknode.conf.rpmsave").exists());
}

#[test]
fn dnf_installs_the_aarch64_agent_from_the_signed_repository_with_forcearch() {
    if !require_root() {
        return;
    }
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let arm = dir.path().join("tasknode-aarch64");
    install_binary(&aarch64::static_agent(), &arm);
    let out = dir.path().join("dist");
    dist_json(&[
        "build",
        "--out",
        out.to_str().unwrap(),
        "--version",
        &f.v1.0,
        "--targets",
        "al8",
        "--keys",
        f.keys.to_str().unwrap(),
        "--agent",
        f.v1.1.to_str().unwrap(),
        "--agent",
        arm.to_str().unwrap(),
        "--source-date-epoch",
        EPOCH,
    ]);
    let console = Console::start(&["--dist", out.to_str().unwrap()]);
    let sb = dnf_root(Os::Alinux3);

    // The .repo's $basearch is aarch64 under --forcearch: dnf takes repo/al8/aarch64/, checks
    // its signed metadata and the package's signature, and runs the scriptlets.
    let o = dnf(
        &sb,
        &console,
        &["--forcearch", "aarch64", "install", "tasknode"],
    );
    assert!(
        o.status.success(),
        "dnf install: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let q = ok(Command::new("rpm").arg("--root").arg(sb.root()).args([
        "-q",
        "--qf",
        "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}",
        "tasknode",
    ]));
    assert_eq!(q, format!("tasknode-{}-1.al8.aarch64", f.v1.0));
    let installed = std::fs::read(sb.path("/usr/bin/tasknode")).unwrap();
    assert_eq!(Arch::of_elf(&installed), Some(Arch::Aarch64));
    assert_eq!(std::fs::read(&arm).unwrap(), installed);
    let version = aarch64::command(&sb.path("/usr/bin/tasknode"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&version.stdout).trim(),
        format!("tasknode {}", f.v1.0),
        "{}",
        stderr(&version)
    );
    let passwd = std::fs::read_to_string(sb.path("/etc/passwd")).unwrap();
    assert!(passwd.contains("admin:x:"), "%pre made the user: {passwd}");
    assert!(
        sb.path("/etc/systemd/system/multi-user.target.wants/tasknode.service")
            .is_symlink(),
        "%post enabled the service"
    );
    let keys = ok(Command::new("rpm")
        .arg("--root")
        .arg(sb.root())
        .args(["-q", "gpg-pubkey"]));
    assert!(keys.contains("gpg-pubkey-"), "dnf imported the key: {keys}");
}

#[test]
fn dnf_refuses_a_tampered_package_repomd_or_a_package_signed_by_another_key() {
    if !require_root() {
        return;
    }
    let f = fixture();

    // A package changed after it was indexed.
    let out = tempfile::tempdir().unwrap();
    build_release_at(out.path(), &f.keys, &f.v1.0, &f.v1.1, "al8", EPOCH);
    let rpm = rpm_path(out.path(), "al8", &f.v1.0);
    let mut bytes = std::fs::read(&rpm).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&rpm, &bytes).unwrap();
    let console = Console::start(&["--dist", out.path().to_str().unwrap()]);
    let sb = dnf_root(Os::Alinux3);
    let o = dnf(&sb, &console, &["install", "tasknode"]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("checksum doesn't match"), "{text}");
    assert!(!sb.path("/usr/bin/tasknode").exists());

    // repomd.xml changed after it was signed.
    let out = tempfile::tempdir().unwrap();
    build_release_at(out.path(), &f.keys, &f.v1.0, &f.v1.1, "al8", EPOCH);
    let repomd = out.path().join("repo/al8/x86_64/repodata/repomd.xml");
    let text = std::fs::read_to_string(&repomd).unwrap();
    std::fs::write(&repomd, text.replace("<revision>", "<revision>1")).unwrap();
    let console = Console::start(&["--dist", out.path().to_str().unwrap()]);
    let sb = dnf_root(Os::Alinux3);
    let o = dnf(&sb, &console, &["install", "tasknode"]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("GPG signature verification error"), "{text}");
    assert!(!sb.path("/usr/bin/tasknode").exists());

    // A package signed by another key, dropped into the repository before the right key
    // indexed and signed it.
    let foreign = tempfile::tempdir().unwrap();
    build_release_at(
        foreign.path(),
        &f.other_keys,
        &f.v1.0,
        &f.v1.1,
        "al8",
        EPOCH,
    );
    let out = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(out.path().join("repo/al8/x86_64")).unwrap();
    std::fs::copy(
        rpm_path(foreign.path(), "al8", &f.v1.0),
        rpm_path(out.path(), "al8", &f.v1.0),
    )
    .unwrap();
    build_release_at(out.path(), &f.keys, &f.v2.0, &f.v2.1, "al8", EPOCH);
    let console = Console::start(&["--dist", out.path().to_str().unwrap()]);
    let sb = dnf_root(Os::Alinux3);
    let o = dnf(&sb, &console, &["install", &format!("tasknode-{}", f.v1.0)]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("Public key for") && text.contains("GPG check FAILED"),
        "{text}"
    );
    assert!(!sb.path("/usr/bin/tasknode").exists());
}

#[test]
fn dnf_installs_over_https_from_a_console_with_its_own_ca_set_up_by_its_yum_command() {
    if !require_root() {
        return;
    }
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    build_release_at(out.path(), &f.keys, &f.v1.0, &f.v1.1, "al8", EPOCH);
    let console = Console::start(&["--tls", "--dist", out.path().to_str().unwrap()]);
    assert!(console.url.starts_with("https://"), "{}", console.url);
    let setup: Value =
        serde_json::from_str(&console.cli_ok(&["yum-command", "--dist", "al8", "--json"])).unwrap();
    let ca_file = tasknode_protocol::layout::YUM_CA_FILE;
    let repo_file = tasknode_protocol::layout::YUM_REPO_FILE;
    assert_eq!(setup["ca_file"], ca_file);
    let command = setup["command"].as_str().unwrap();

    let sb = dnf_root(Os::Alinux3);
    sb.add_program("curl");
    // As on every host with yum.
    std::fs::create_dir_all(sb.path("/etc/yum.repos.d")).unwrap();
    // A CA that is not the console's is refused before anything trusts it, and no .repo is
    // written.
    let sha = setup["ca_sha256"].as_str().unwrap();
    let forged = command.replace(sha, &"0".repeat(64));
    assert_ne!(forged, command);
    let o = sb.sh("/bin/sh", &forged);
    assert!(!o.status.success(), "a wrong CA was accepted");
    assert!(!sb.path(repo_file).exists());

    // The command as printed, under the sandbox's busybox sh.
    let o = sb.sh("/bin/sh", command);
    assert!(o.status.success(), "{command}: {}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(sb.path(ca_file)).unwrap(),
        std::fs::read_to_string(console.ca()).unwrap()
    );
    let repo = std::fs::read_to_string(sb.path(repo_file)).unwrap();
    assert!(
        repo.contains(&format!("baseurl={}/repo/al8/$basearch/", console.url))
            && repo.contains(&format!("\nsslverify=1\nsslcacert={ca_file}\n")),
        "{repo}"
    );

    // Without the repository's CA, dnf does not trust the console.
    let without: String = repo
        .lines()
        .filter(|l| !l.starts_with("sslcacert="))
        .map(|l| format!("{l}\n"))
        .collect();
    let o = dnf_with_repo(&sb, &without, &["install", "tasknode"]);
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(!o.status.success(), "{text}");
    assert!(text.contains("certificate verification failed"), "{text}");
    assert!(!sb.path("/usr/bin/tasknode").exists());

    // With it, dnf installs: the repository, its signed metadata and the key all over HTTPS.
    // dnf reads `sslcacert` on the host even under --installroot, so the path the host would
    // use is taken inside the throwaway root.
    let rooted = repo.replace(
        &format!("sslcacert={ca_file}"),
        &format!("sslcacert={}", sb.path(ca_file).display()),
    );
    let o = dnf_with_repo(&sb, &rooted, &["install", "tasknode"]);
    assert!(
        o.status.success(),
        "dnf install over HTTPS: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    assert_eq!(agent_version_in_root(&sb), format!("tasknode {}", f.v1.0));
}

#[test]
fn yum_command_over_plain_http_and_without_a_repository() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    build_release_at(out.path(), &f.keys, &f.v1.0, &f.v1.1, "el7", EPOCH);
    let console = Console::start(&["--dist", out.path().to_str().unwrap()]);
    let setup: Value = serde_json::from_str(&console.cli_ok(&["yum-command", "--json"])).unwrap();
    assert_eq!(setup["dist"], "el7");
    assert_eq!(
        setup["command"],
        format!(
            "curl -fsS -o {} {}/yum/el7/tasknode.repo",
            tasknode_protocol::layout::YUM_REPO_FILE,
            console.url
        )
    );
    assert!(setup.get("ca_file").is_none(), "{setup}");
    let o = console.cli(&["yum-command", "--dist", "el9"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("el9"), "{}", stderr(&o));

    let plain = Console::start(&[]);
    let o = plain.cli(&["yum-command"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--dist DIR"), "{}", stderr(&o));
}
