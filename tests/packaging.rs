//! `tasknode-dist keygen` and `build`, checked with the real tools of the field: rpm -K against
//! the imported key, rpmlint, rpm -qp, gpg, lintian and dpkg; and the release directory a real
//! console serves with --dist. dnf installing from that repository is in tests/yum.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use tasknode_tests::releases::{
    EPOCH, agent_version_in_root, dist, fixture, lintian, ok, rpm_path, run,
};
use tasknode_tests::sandbox::{Os, Sandbox, require_root};
use tasknode_tests::{Console, build_release_at, dist_json, fixture_dir, stderr, which};

const DISTS: [&str; 4] = ["el6", "el7", "al7", "al8"];
/// The rpmlib() features rpm 4.8 (CentOS 6) provides; a package may need no other.
const RPM_48_RPMLIB: &[&str] = &[
    "BuiltinLuaScripts",
    "CompressedFileNames",
    "ConcurrentAccess",
    "ExplicitPackageProvide",
    "FileCaps",
    "FileDigests",
    "HeaderLoadSortsTags",
    "PartialHardlinkSets",
    "PayloadFilesHavePrefix",
    "PayloadIsBzip2",
    "PayloadIsLzma",
    "PayloadIsXz",
    "ScriptletInterpreterArgs",
    "VersionedDependencies",
];

/// A release of the first version for every dist, built once.
fn release() -> &'static Path {
    static R: OnceLock<PathBuf> = OnceLock::new();
    R.get_or_init(|| {
        let f = fixture();
        let dir = fixture_dir("release");
        build_release_at(&dir, &f.keys, &f.v1.0, &f.v1.1, "el6,el7,al7,al8", EPOCH);
        dir
    })
    .as_path()
}

/// An rpm database holding only the release's public key.
fn rpmdb_with_key(key: &Path) -> tempfile::TempDir {
    let db = tempfile::tempdir().unwrap();
    ok(Command::new(which("rpm"))
        .arg("--dbpath")
        .arg(db.path())
        .arg("--import")
        .arg(key));
    db
}

fn query(rpm: &Path, format: &str) -> String {
    ok(Command::new("rpm")
        .args(["-qp", "--nosignature", "--qf", format])
        .arg(rpm))
}

/// Bytes of the signature header (index entries and data) of an RPM file.
fn signature_header_size(rpm: &[u8]) -> usize {
    let h = &rpm[96..];
    assert_eq!(
        &h[..3],
        b"\x8e\xad\xe8",
        "no signature header after the lead"
    );
    let n = u32::from_be_bytes(h[8..12].try_into().unwrap()) as usize;
    let data = u32::from_be_bytes(h[12..16].try_into().unwrap()) as usize;
    16 + 16 * n + data
}

#[test]
fn keygen_makes_a_lone_rsa_4096_key_and_an_ed25519_key_and_never_replaces_them() {
    let f = fixture();
    for (name, mode) in [
        ("package-signing.secret.asc", 0o600),
        ("manifest-signing.secret.pem", 0o600),
        ("RPM-GPG-KEY-tasknode", 0o644),
        ("manifest-signing.public.pem", 0o644),
        ("manifest-signing.next.secret.pem", 0o600),
        ("manifest-signing.next.public.pem", 0o644),
    ] {
        assert_eq!(tasknode_tests::mode_of(&f.keys.join(name)), mode, "{name}");
    }
    // gpg's view of the public key: one RSA-4096 primary key that can sign, no subkeys.
    let gnupg = tempfile::tempdir().unwrap();
    let listing = ok(Command::new(which("gpg"))
        .env("GNUPGHOME", gnupg.path())
        .args(["--with-colons", "--import-options", "show-only", "--import"])
        .arg(f.keys.join("RPM-GPG-KEY-tasknode")));
    let pubs: Vec<&str> = listing.lines().filter(|l| l.starts_with("pub:")).collect();
    assert_eq!(pubs.len(), 1, "{listing}");
    let fields: Vec<&str> = pubs[0].split(':').collect();
    assert_eq!((fields[2], fields[3]), ("4096", "1"), "RSA-4096: {listing}");
    assert!(fields[11].contains('s'), "the primary key signs: {listing}");
    assert!(!listing.lines().any(|l| l.starts_with("sub:")), "{listing}");
    let pem = std::fs::read_to_string(f.keys.join("manifest-signing.public.pem")).unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");

    let before = std::fs::read(f.keys.join("package-signing.secret.asc")).unwrap();
    let again = dist(&["keygen", "--out", f.keys.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        std::fs::read(f.keys.join("package-signing.secret.asc")).unwrap(),
        before
    );
}

#[test]
fn every_rpm_verifies_lints_clean_and_fits_rpm_4_8() {
    let f = fixture();
    let out = release();
    let db = rpmdb_with_key(&out.join("RPM-GPG-KEY-tasknode"));
    let home = tempfile::tempdir().unwrap();
    // rpmlint checks signatures against the default database: point it at ours.
    std::fs::write(
        home.path().join(".rpmmacros"),
        format!("%_dbpath {}\n", db.path().display()),
    )
    .unwrap();
    let rpmlintrc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rpm/rpmlintrc");

    for d in DISTS {
        let rpm = rpm_path(out, d, &f.v1.0);
        let checked = ok(Command::new("rpm")
            .arg("--dbpath")
            .arg(db.path())
            .arg("-Kv")
            .arg(&rpm));
        assert!(
            checked.contains("Header V4 RSA/SHA256 Signature, key ID")
                && checked.contains(": OK")
                && !checked.contains("NOKEY")
                && !checked.contains("BAD"),
            "{d}: {checked}"
        );

        let lint = run(Command::new(which("rpmlint"))
            .env("HOME", home.path())
            .arg("-r")
            .arg(&rpmlintrc)
            .arg(&rpm));
        let lint_text = String::from_utf8_lossy(&lint.stdout);
        assert!(
            lint.status.success() && lint_text.contains(" 0 errors"),
            "{d}: rpmlint: {lint_text}{}",
            stderr(&lint)
        );

        assert_eq!(
            query(&rpm, "%{RELEASE} %{PAYLOADCOMPRESSOR} %{FILEDIGESTALGO}"),
            format!("1.{d} xz 8"),
            "{d}: release, xz payload, SHA-256 file digests"
        );
        let requires = query(&rpm, "[%{REQUIRENAME}\n]");
        for line in requires.lines().filter(|l| l.starts_with("rpmlib(")) {
            let feature = &line["rpmlib(".len()..line.len() - 1];
            assert!(
                RPM_48_RPMLIB.contains(&feature),
                "{d}: requires {line}, which rpm 4.8 lacks"
            );
        }
        assert!(requires.contains("rpmlib(PayloadIsXz)"), "{requires}");
        let bytes = std::fs::read(&rpm).unwrap();
        let sig = signature_header_size(&bytes);
        assert!(sig < 8192, "{d}: signature header is {sig} bytes");

        let scripts = ok(Command::new("rpm")
            .args(["-qp", "--nosignature", "--scripts"])
            .arg(&rpm));
        for section in [
            "preinstall scriptlet",
            "postinstall scriptlet",
            "preuninstall scriptlet",
            "postuninstall scriptlet",
        ] {
            assert!(scripts.contains(section), "{d}: no {section}: {scripts}");
        }
        assert!(scripts.contains("useradd -r -g 'admin'"), "{scripts}");
        let files = query(
            &rpm,
            "[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags} %{FILENAMES}\n]",
        );
        assert!(
            files.contains("-rw------- admin:admin cn /etc/tasknode/tasknode.conf"),
            "{d}: config(noreplace) 0600 admin: {files}"
        );
        assert!(
            files.contains("-rwxr-xr-x root:root  /usr/bin/tasknode"),
            "{files}"
        );
        // The config's directory is root's: admin cannot swap the config for a link.
        assert!(
            files.contains("drwxr-x--- root:admin  /etc/tasknode\n"),
            "{d}: /etc/tasknode root:admin 0750: {files}"
        );
        // The man pages (documentation: `rpm --excludedocs` leaves them out) and the
        // completions, where this dist's shells look for them.
        let bash = if d == "el6" {
            "/etc/bash_completion.d"
        } else {
            "/usr/share/bash-completion/completions"
        };
        for (flags, path) in [
            ("d", "/usr/share/man/man1/tasknode.1.gz".to_owned()),
            ("d", "/usr/share/man/man1/tasknode-enroll.1.gz".to_owned()),
            ("", format!("{bash}/tasknode")),
            ("", "/usr/share/zsh/site-functions/_tasknode".to_owned()),
            (
                "",
                "/usr/share/fish/vendor_completions.d/tasknode.fish".to_owned(),
            ),
        ] {
            let line = format!("-rw-r--r-- root:root {flags} {path}\n");
            assert!(files.contains(&line), "{d}: {line:?} in {files}");
        }
        if d == "el6" {
            assert!(scripts.contains("chkconfig --add 'tasknode'"), "{scripts}");
            assert!(scripts.contains("condrestart"), "{scripts}");
            assert!(files.contains("/etc/rc.d/init.d/tasknode"), "{files}");
            assert!(requires.contains("initscripts"), "{requires}");
        } else {
            assert!(scripts.contains("systemctl enable"), "{scripts}");
            assert!(scripts.contains("systemctl try-restart"), "{scripts}");
            assert!(
                files.contains("/usr/lib/systemd/system/tasknode.service"),
                "{files}"
            );
        }
    }
}

/// The text of `<tag ...>TEXT</tag>` inside `block`.
fn element<'a>(block: &'a str, tag: &str) -> &'a str {
    let start = block
        .find(&format!("<{tag}"))
        .unwrap_or_else(|| panic!("no <{tag}> in {block}"));
    let rest = &block[start..];
    let open_end = rest.find('>').unwrap() + 1;
    let close = rest.find(&format!("</{tag}>")).unwrap();
    &rest[open_end..close]
}

/// The repomd.xml record of `kind` names a gzip file whose size and SHA-256 it gives, and whose
/// content (as `gzip -dc` reads it) has the open size and open checksum it gives.
fn check_record(repo: &Path, repomd: &str, kind: &str) {
    use sha2::Digest;
    let start = repomd.find(&format!("<data type=\"{kind}\">")).unwrap();
    let block = &repomd[start..start + repomd[start..].find("</data>").unwrap()];
    let href_at = block.find("href=\"").unwrap() + 6;
    let href = &block[href_at..href_at + block[href_at..].find('"').unwrap()];
    let gz = std::fs::read(repo.join(href)).unwrap();
    assert_eq!(
        element(block, "checksum"),
        hex::encode(sha2::Sha256::digest(&gz)),
        "{kind}"
    );
    assert_eq!(element(block, "size"), gz.len().to_string(), "{kind}");
    let plain = run(Command::new(which("gzip")).arg("-dc").arg(repo.join(href))).stdout;
    assert!(plain.starts_with(b"<?xml"), "{kind} is not gzip XML");
    assert_eq!(
        element(block, "open-checksum"),
        hex::encode(sha2::Sha256::digest(&plain)),
        "{kind}"
    );
    assert_eq!(
        element(block, "open-size"),
        plain.len().to_string(),
        "{kind}"
    );
}

#[test]
fn the_repository_is_signed_and_lists_what_it_holds() {
    let f = fixture();
    let out = release();
    let gnupg = tempfile::tempdir().unwrap();
    let gpg = || {
        let mut c = Command::new(which("gpg"));
        c.env("GNUPGHOME", gnupg.path());
        c
    };
    ok(gpg()
        .args(["--batch", "--import"])
        .arg(out.join("RPM-GPG-KEY-tasknode")));
    for d in DISTS {
        let repodata = out.join(format!("repo/{d}/x86_64/repodata"));
        ok(gpg()
            .args(["--batch", "--verify"])
            .arg(repodata.join("repomd.xml.asc"))
            .arg(repodata.join("repomd.xml")));
        let repomd = std::fs::read_to_string(repodata.join("repomd.xml")).unwrap();
        for kind in ["primary", "filelists", "other"] {
            assert!(
                repomd.contains(&format!("<data type=\"{kind}\">")),
                "{d}: {repomd}"
            );
        }
        assert!(repomd.contains("<checksum type=\"sha256\">"), "{repomd}");
        assert!(
            repomd.contains(".xml.gz\""),
            "gzip XML for el6's yum: {repomd}"
        );
        assert!(!repomd.contains("sqlite"), "{repomd}");
        for kind in ["primary", "filelists", "other"] {
            check_record(&out.join(format!("repo/{d}/x86_64")), &repomd, kind);
        }
    }
    // dnf reads the metadata: the package it lists is the file in the directory.
    let listed = ok(Command::new(which("dnf"))
        .args(["repoquery", "-q", "--setopt=reposdir=/dev/null"])
        .arg(format!(
            "--repofrompath=t,file://{}",
            out.join("repo/el7/x86_64").display()
        ))
        .args(["--repo=t", "--qf", "%{name}-%{version}-%{release}.%{arch}"]));
    assert_eq!(listed.trim(), format!("tasknode-{}-1.el7.x86_64", f.v1.0));
    let sums =
        std::fs::read_to_string(out.join(format!("releases/{}/SHA256SUMS", f.v1.0))).unwrap();
    ok(Command::new("sha256sum")
        .arg("-c")
        .arg("--quiet")
        .arg("-")
        .current_dir(out)
        .stdin(std::fs::File::open(out.join(format!("releases/{}/SHA256SUMS", f.v1.0))).unwrap()));
    assert!(sums.contains("-x86_64-linux-musl.tar.gz"), "{sums}");
    assert_eq!(
        sums.lines().filter(|l| l.contains(".rpm")).count(),
        4,
        "{sums}"
    );
}

#[test]
fn two_builds_of_a_version_are_byte_identical_on_any_number_of_threads() {
    let f = fixture();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    // Four at once (more than the packages of a dist, whatever the cores), and one at a time.
    let build = |out: &Path, jobs: &str| {
        dist_json(&[
            "build",
            "--out",
            out.to_str().unwrap(),
            "--version",
            &f.v1.0,
            "--targets",
            "el6,el7,al8,deb",
            "--keys",
            f.keys.to_str().unwrap(),
            "--agent",
            f.v1.1.to_str().unwrap(),
            "--source-date-epoch",
            EPOCH,
            "--jobs",
            jobs,
        ])
    };
    build(a.path(), "4");
    build(b.path(), "1");
    let files_a = tree(a.path());
    let files_b = tree(b.path());
    assert_eq!(
        files_a.keys().collect::<Vec<_>>(),
        files_b.keys().collect::<Vec<_>>()
    );
    assert!(files_a.keys().any(|k| k.ends_with("repomd.xml.asc")));
    assert!(files_a.keys().any(|k| k.ends_with(".tar.gz")));
    assert!(files_a.keys().any(|k| k.ends_with("_amd64.deb")));
    for (name, bytes) in &files_a {
        assert!(bytes == &files_b[name], "{name} differs between two builds");
    }
    // The date is an input: another one gives other packages.
    let c = tempfile::tempdir().unwrap();
    build_release_at(c.path(), &f.keys, &f.v1.0, &f.v1.1, "el6", "1700000001");
    let name = format!("repo/el6/x86_64/tasknode-{}-1.el6.x86_64.rpm", f.v1.0);
    assert_ne!(tree(c.path())[&name], files_a[&name]);
}

fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let f = fixture();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let keys = f.keys.to_str().unwrap();
    let agent = f.v1.1.to_str().unwrap();
    let public_only = work.path().join("public-only");
    std::fs::create_dir(&public_only).unwrap();
    std::fs::copy(
        f.keys.join("RPM-GPG-KEY-tasknode"),
        public_only.join("package-signing.secret.asc"),
    )
    .unwrap();
    std::fs::set_permissions(
        public_only.join("package-signing.secret.asc"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let a_file = work.path().join("a-file");
    std::fs::write(&a_file, "").unwrap();
    let under_file = a_file.join("out");
    let v = f.v1.0.as_str();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--targets", "el6,el9"],
            "--targets: \"el9\" is not a target",
        ),
        (vec!["--version", "1.0~rc1"], "'~'"),
        (vec!["--version", "1.0rc1"], "pre-release"),
        (vec!["--version", "1.01"], "leading zero"),
        (vec!["--no-keys"], "--keys is required"),
        (vec!["--keys", "/nonexistent/keys"], "tasknode-dist keygen"),
        (
            vec!["--keys", public_only.to_str().unwrap()],
            "not an armored OpenPGP secret key",
        ),
        (
            vec!["--out", under_file.to_str().unwrap()],
            "cannot be written",
        ),
        (vec!["--version", "9.9.9"], "not 9.9.9"),
    ];
    // A directory released with one key is not signed with another.
    let released = work.path().join("released");
    build_release_at(&released, &f.other_keys, v, &f.v1.1, "el7", EPOCH);
    let before = tree(&released);
    let o = dist(&[
        "build",
        "--out",
        released.to_str().unwrap(),
        "--version",
        &f.v2.0,
        "--keys",
        keys,
        "--agent",
        f.v2.1.to_str().unwrap(),
        "--targets",
        "el7",
        "--source-date-epoch",
        EPOCH,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("is another key"), "{}", stderr(&o));
    assert!(tree(&released) == before);
    for (change, says) in cases {
        let mut args = vec![
            "build",
            "--out",
            out.to_str().unwrap(),
            "--version",
            v,
            "--keys",
            keys,
            "--agent",
            agent,
            "--source-date-epoch",
            EPOCH,
        ];
        let mut i = 0;
        while i < change.len() {
            let flag = change[i];
            if flag == "--no-keys" {
                let at = args.iter().position(|a| *a == "--keys").unwrap();
                args.drain(at..at + 2);
                i += 1;
                continue;
            }
            let at = args.iter().position(|a| *a == flag);
            match at {
                Some(at) => args[at + 1] = change[i + 1],
                None => args.extend([flag, change[i + 1]]),
            }
            i += 2;
        }
        let o = dist(&args);
        assert_eq!(o.status.code(), Some(1), "{change:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{change:?}: {}", stderr(&o));
        let written = if out.exists() {
            tree(&out)
        } else {
            BTreeMap::new()
        };
        assert!(written.is_empty(), "{change:?} wrote {:?}", written.keys());
    }
}

#[test]
fn a_released_version_is_never_changed_and_a_new_one_is_indexed_beside_it() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    build_release_at(out.path(), &f.keys, &f.v1.0, &f.v1.1, "al8", EPOCH);
    let before = tree(out.path());
    // The same version from other inputs (another date) would change what yum caches.
    let o = dist(&[
        "build",
        "--out",
        out.path().to_str().unwrap(),
        "--version",
        &f.v1.0,
        "--keys",
        f.keys.to_str().unwrap(),
        "--agent",
        f.v1.1.to_str().unwrap(),
        "--targets",
        "al8",
        "--source-date-epoch",
        "1700000005",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("was released already"),
        "{}",
        stderr(&o)
    );
    assert!(
        tree(out.path()) == before,
        "a refused build changed the release directory"
    );

    let report = build_release_at(out.path(), &f.keys, &f.v2.0, &f.v2.1, "al8", EPOCH);
    let repo = &report["repositories"][0];
    assert_eq!(repo["packages"], 2, "{report}");
    assert_eq!(repo["hashed"], 1, "only the new package is read: {report}");
    let listed = ok(Command::new(which("dnf"))
        .args(["repoquery", "-q", "--setopt=reposdir=/dev/null"])
        .arg(format!(
            "--repofrompath=t,file://{}",
            out.path().join("repo/al8/x86_64").display()
        ))
        .args(["--repo=t", "--qf", "%{version}"]));
    let mut versions: Vec<&str> = listed.lines().collect();
    versions.sort_unstable();
    assert_eq!(versions, [f.v1.0.as_str(), f.v2.0.as_str()]);
    // The agent install scripts fetch is the newest.
    let agent = std::fs::read(out.path().join("agents/tasknode-x86_64")).unwrap();
    assert_eq!(
        tasknode_protocol::agent_version_in(&agent),
        Some(f.v2.0.as_str())
    );
}

#[test]
fn the_console_serves_the_release_directory() {
    let out = release();
    let console = Console::start(&["--dist", out.to_str().unwrap()]);
    let http = console.http();
    let get = |path: &str| http.get(format!("{}{path}", console.url)).send().unwrap();
    let key = get("/RPM-GPG-KEY-tasknode");
    assert_eq!(key.status(), 200);
    assert_eq!(
        key.text().unwrap(),
        std::fs::read_to_string(out.join("RPM-GPG-KEY-tasknode")).unwrap()
    );
    let repo = get("/yum/el7/tasknode.repo").text().unwrap();
    assert!(
        repo.contains(&format!("baseurl={}/repo/el7/$basearch/", console.url))
            && repo.contains("gpgcheck=1")
            && repo.contains("repo_gpgcheck=1"),
        "{repo}"
    );
    let unknown = get("/yum/el9/tasknode.repo");
    assert_eq!(unknown.status(), 404);
    assert!(unknown.text().unwrap().contains("el9"));
    let repomd = get("/repo/al8/x86_64/repodata/repomd.xml");
    assert_eq!(repomd.status(), 200);
    // Only the release directory is served. The paths go out as written (an HTTP client
    // would resolve the dot segments itself).
    for path in [
        "/repo/../RPM-GPG-KEY-tasknode",
        "/repo/%2e%2e/%2e%2e/etc/passwd",
        "/releases/..%2f..%2fetc/passwd",
        "/repo//etc/passwd",
    ] {
        let status = raw_get_status(console.port, path);
        assert!(status == 404 || status == 400, "{path}: {status}");
    }
    // Its agents/ is what install scripts download.
    let agent = get("/dist/agent/tasknode-x86_64");
    assert_eq!(agent.status(), 200);
}

/// The status code of `GET path` sent byte for byte.
fn raw_get_status(port: u16, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer}"))
}

#[test]
fn the_deb_lints_clean_and_dpkg_installs_and_purges_it() {
    if !require_root() {
        return;
    }
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    // No keys: the .deb is not signed (apt repositories sign their Release files instead).
    let o = dist(&[
        "build",
        "--out",
        out.path().to_str().unwrap(),
        "--version",
        &f.v1.0,
        "--agent",
        f.v1.1.to_str().unwrap(),
        "--targets",
        "deb",
        "--source-date-epoch",
        EPOCH,
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    let deb = out.path().join(format!(
        "releases/{}/tasknode_{}-1_amd64.deb",
        f.v1.0, f.v1.0
    ));
    assert!(
        report["artifacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "deb"),
        "{report}"
    );

    let lint = lintian(&deb);
    let lint_text = format!("{}{}", String::from_utf8_lossy(&lint.stdout), stderr(&lint));
    assert!(lint.status.success(), "lintian: {lint_text}");
    assert!(
        !lint_text.lines().any(|l| l.starts_with("E:")),
        "lintian: {lint_text}"
    );
    let info = ok(Command::new("dpkg-deb").arg("-I").arg(&deb));
    assert!(info.contains(&format!("Version: {}-1", f.v1.0)), "{info}");
    let contents = ok(Command::new("dpkg-deb").arg("-c").arg(&deb));
    assert!(
        contents.contains("-rw------- 0/0") && contents.contains("./etc/tasknode/tasknode.conf"),
        "{contents}"
    );
    for path in [
        "./usr/share/man/man1/tasknode.1.gz",
        "./usr/share/man/man1/tasknode-enroll.1.gz",
        "./usr/share/bash-completion/completions/tasknode",
        "./usr/share/zsh/vendor-completions/_tasknode",
        "./usr/share/fish/vendor_completions.d/tasknode.fish",
    ] {
        assert!(contents.contains(path), "{path} in {contents}");
    }

    // A Debian-like root: the sandbox's busybox, shadow's tools, getent and systemctl, and a
    // dpkg database that records shadow's `passwd` package, which the .deb depends on.
    let sb = Sandbox::new(Os::Debian12);
    for program in ["groupadd", "getent", "systemctl"] {
        sb.add_program(program);
    }
    for d in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
        "var/log",
    ] {
        std::fs::create_dir_all(sb.path(d)).unwrap();
    }
    std::fs::write(
        sb.path("/var/lib/dpkg/status"),
        "Package: passwd\nStatus: install ok installed\nVersion: 1:4.13\nArchitecture: amd64\n\
         Maintainer: sandbox\nDescription: shadow's user tools, copied from the host\n\n",
    )
    .unwrap();
    std::fs::write(sb.path("/var/lib/dpkg/available"), "").unwrap();
    let before = sb.files();
    let skip: Vec<&str> = tasknode_tests::sandbox::ACCOUNT_FILES.to_vec();
    let state = || tasknode_tests::sandbox::tree_state(sb.root(), &["/etc", "/usr"], &skip);
    let unpacked = state();
    let dpkg = |args: &[&str]| {
        run(Command::new(which("dpkg"))
            .arg(format!("--root={}", sb.root().display()))
            .arg("--log=/dev/null")
            .args(args))
    };
    let o = dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "dpkg -i: {}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    assert_eq!(agent_version_in_root(&sb), format!("tasknode {}", f.v1.0));
    let passwd = std::fs::read_to_string(sb.path("/etc/passwd")).unwrap();
    assert!(passwd.contains("admin:x:"), "{passwd}");
    let conf = sb.path("/etc/tasknode/tasknode.conf");
    assert_eq!(tasknode_tests::mode_of(&conf), 0o600);
    use std::os::unix::fs::MetadataExt;
    assert_ne!(
        std::fs::metadata(&conf).unwrap().uid(),
        0,
        "postinst gave the config to admin"
    );
    let wants = sb.path("/etc/systemd/system/multi-user.target.wants/tasknode.service");
    assert!(wants.is_symlink(), "postinst enabled the service");
    // /etc/tasknode is root's: admin cannot swap the config for a link.
    let dir = std::fs::metadata(sb.path("/etc/tasknode")).unwrap();
    assert_eq!((dir.uid(), dir.mode() & 0o777), (0, 0o750));

    // A task (admin) plants links in the directories the package gave it; reinstalling
    // (postinst again) and purging (postrm) follow none of them.
    let plant = sb.sh(
        "/bin/sh",
        "su -s /bin/sh admin -c 'ln -s /etc/hosts /var/log/tasknode/agent.log \
         && ln -s /etc /var/log/tasknode/tasks && ln -s /usr /var/lib/tasknode/work \
         && ln -s /etc/shadow /var/lib/tasknode/.hidden'",
    );
    assert!(plant.status.success(), "{}", stderr(&plant));
    let swap = sb.sh(
        "/bin/sh",
        "su -s /bin/sh admin -c 'ln -sf /etc/hosts /etc/tasknode/tasknode.conf'",
    );
    assert!(
        !swap.status.success(),
        "admin swapped the config for a link"
    );
    let planted = state();
    let o = dpkg(&["-i", deb.to_str().unwrap()]);
    assert!(o.status.success(), "dpkg -i again: {}", stderr(&o));
    assert_eq!(
        tasknode_tests::sandbox::tree_changes(&planted, &state(), &[]),
        Vec::<String>::new(),
        "postinst changed /etc or /usr through admin's links"
    );

    let o = dpkg(&["--purge", "tasknode"]);
    assert!(o.status.success(), "dpkg --purge: {}", stderr(&o));
    let left: Vec<String> = sb
        .files()
        .difference(&before)
        // dpkg's own records, shadow's lock and backups (the user admin stays), and the
        // directories systemctl made for the enable link, which it leaves empty.
        .filter(|p| {
            let empty_dir = sb.path(p).read_dir().is_ok_and(|d| {
                d.filter_map(Result::ok).all(|e| {
                    e.path().is_dir() && e.path().read_dir().is_ok_and(|mut i| i.next().is_none())
                })
            });
            let expected = p.starts_with("var/lib/dpkg")
                || p.ends_with('-')
                || *p == "etc/.pwd.lock"
                || (p.starts_with("etc/systemd") && empty_dir);
            !expected
        })
        .cloned()
        .collect();
    assert!(left.is_empty(), "the purge left {left:?}");
    // /etc and /usr are as they were before the package came (but for the directories
    // systemctl made), and what admin's links pointed at is untouched.
    let changed: Vec<String> = tasknode_tests::sandbox::tree_changes(&unpacked, &state(), &[])
        .into_iter()
        .filter(|c| !c.starts_with("etc/systemd"))
        .collect();
    assert_eq!(
        changed,
        Vec::<String>::new(),
        "the purge left or changed something in /etc or /usr"
    );
    let shadow = std::fs::metadata(sb.path("/etc/shadow")).unwrap();
    assert_eq!(shadow.uid(), 0, "/etc/shadow changed owner");
    assert!(
        sb.path("/etc/passwd").exists()
            && std::fs::read_to_string(sb.path("/etc/passwd"))
                .unwrap()
                .contains("admin:x:")
    );
}

#[test]
fn index_reindexes_one_directory_and_reads_only_new_packages() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    build_release_at(out.path(), &f.keys, &f.v1.0, &f.v1.1, "el7", EPOCH);
    let repo = out.path().join("repo/el7/x86_64");
    let index = |extra: &[&str]| {
        let mut args = vec![
            "index",
            "--repo",
            repo.to_str().unwrap(),
            "--keys",
            f.keys.to_str().unwrap(),
            "--source-date-epoch",
            EPOCH,
        ];
        args.extend_from_slice(extra);
        dist(&args)
    };
    let o = index(&["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["packages"].as_u64(), v["hashed"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    // Without metadata every package is read; the result is the metadata `build` wrote (on
    // as many threads as there are cores), on one thread too.
    let before = std::fs::read(repo.join("repodata/repomd.xml")).unwrap();
    std::fs::remove_dir_all(repo.join("repodata")).unwrap();
    let o = index(&["--json", "--jobs", "1"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["hashed"], 1, "{v}");
    assert_eq!(
        std::fs::read(repo.join("repodata/repomd.xml")).unwrap(),
        before
    );
    assert!(repo.join("repodata/repomd.xml.asc").is_file());
    assert!(!repo.join(".repodata.staging").exists());
    let o = dist(&[
        "index",
        "--repo",
        "/nonexistent",
        "--keys",
        f.keys.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--repo /nonexistent"), "{}", stderr(&o));
}
