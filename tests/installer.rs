//! The rendered files checked by the tools that read them: the agent enrolls from the config
//! tasknode-dist renders, shellcheck reads the init scripts, systemd-analyze verifies the unit.
//! shellcheck and systemd-analyze must be installed (scripts/test.sh installs them); a missing
//! tool fails the test rather than skipping it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use tasknode_render::{Layout, Templates, render};
use tasknode_tests::{Agent, Console, bin, hostname, mode_of, stderr};

/// The shells the scripts must work under: bash (CentOS), dash (Debian's sh), busybox ash.
const SHELLS: &[&[&str]] = &[&["bash"], &["dash"], &["busybox", "sh"]];

fn sh(shell: &[&str], script: &Path, action: &str) -> std::process::Output {
    tool(shell[0])
        .args(&shell[1..])
        .arg(script)
        .arg(action)
        .output()
        .unwrap()
}

/// The name of the user running the tests.
fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn tool(name: &str) -> Command {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .unwrap()
        .status
        .success();
    assert!(
        found,
        "{name} is not installed: scripts/test.sh installs it (apt-get install {name})"
    );
    Command::new(name)
}

#[test]
fn the_agent_enrolls_from_the_rendered_config() {
    let console = Console::start(&[]);
    let password = console.create_user("etl");
    console.cli_ok(&["group", "create", "etl", "--network", "classic"]);
    console.cli_ok(&["server", "add", "--group", "etl", "--name", &hostname()]);

    let agent = Agent::new();
    std::fs::create_dir_all(agent.config().parent().unwrap()).unwrap();
    let out = Command::new(bin("tasknode-dist"))
        .args(["render", "config", "--console", &console.url, "--out"])
        .arg(agent.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(mode_of(&agent.config()), 0o600);

    // No --console: the URL comes from the rendered config.
    let mut enroll = Command::new(bin("tasknode"))
        .args([
            "enroll",
            "--user-name",
            "etl",
            "--password-stdin",
            "--enable-uuid",
            "false",
        ])
        .env("TASKNODE_CONFIG", agent.config())
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        writeln!(enroll.stdin.take().unwrap(), "{password}").unwrap();
    }
    let out = enroll.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(agent.config_value("console_url"), console.url);
    assert_eq!(agent.config_value("install_method"), "script");
    assert_eq!(agent.config_value("log_dir"), Layout::script().log_dir);
    // The config records where the pid file and the tasks' work go, from the layout.
    assert_eq!(agent.config_value("pid_file"), Layout::script().pid_file);
    assert_eq!(
        agent.config_value("tasks.work_dir"),
        Layout::script().work_dir
    );
    assert_eq!(agent.config_value("node.server_name"), hostname());
    assert_eq!(mode_of(&agent.config()), 0o600);
}

#[test]
fn hostile_console_urls_are_refused_at_render_time() {
    let dir = tempfile::tempdir().unwrap();
    let canary = dir.path().join("canary");
    let out_file = dir.path().join("tasknode.conf");
    for url in [
        format!("http://x/$(touch {})", canary.display()),
        format!("http://x/`touch {}`", canary.display()),
        "http://x/'; touch /tmp/x; '".to_owned(),
        "http://x\n[node]".to_owned(),
    ] {
        let out = Command::new(bin("tasknode-dist"))
            .args(["render", "config", "--console", &url, "--out"])
            .arg(&out_file)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{url:?} rendered");
        assert!(stderr(&out).contains("--console"), "{}", stderr(&out));
        assert!(!out_file.exists(), "a refused render wrote a file");
    }
    assert!(!canary.exists());
    // An install method the agent does not know: refused, naming the flag and the choices.
    let out = Command::new(bin("tasknode-dist"))
        .args(["render", "config", "--console", "http://x"])
        .args(["--install-method", "curl|sh", "--out"])
        .arg(&out_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--install-method") && err.contains("script, rpm, deb, manual"),
        "{err}"
    );
    assert!(!out_file.exists(), "a refused render wrote a file");
}

/// install.sh as the console renders it, for a token and both architectures.
fn install_script(t: &Templates) -> String {
    let dir = tempfile::tempdir().unwrap();
    for arch in ["x86_64", "aarch64"] {
        std::fs::write(
            dir.path().join(format!("tasknode-{arch}")),
            tasknode_render::artifacts::stand_in_binary("0.1.0", arch.as_bytes()),
        )
        .unwrap();
    }
    let artifacts = tasknode_render::artifacts::AgentArtifacts::scan(dir.path()).unwrap();
    let inputs = render::InstallInputs {
        console_url: "http://console.example.com:8080",
        agent_urls: &[],
        console_ca: None,
        credential: render::InstallCredential::Token(format!("tn_{}", "a".repeat(43))),
        group: "etl",
        enable_uuid: true,
        artifacts: &artifacts,
    };
    render::install_sh(t, &inputs).unwrap()
}

/// install.sh over HTTPS carrying a console CA, as a `serve --tls` console renders it.
fn install_script_with_ca(t: &Templates) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tasknode-x86_64"),
        tasknode_render::artifacts::stand_in_binary("0.1.0", b"x"),
    )
    .unwrap();
    let artifacts = tasknode_render::artifacts::AgentArtifacts::scan(dir.path()).unwrap();
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIU\n-----END CERTIFICATE-----\n";
    let inputs = render::InstallInputs {
        console_url: "https://console.example.com:8443",
        agent_urls: &[
            "https://console-a.example.com:8443".to_owned(),
            "https://console-b.example.com:8443".to_owned(),
        ],
        console_ca: Some(pem),
        credential: render::InstallCredential::Token(format!("tn_{}", "a".repeat(43))),
        group: "etl",
        enable_uuid: false,
        artifacts: &artifacts,
    };
    let script = render::install_sh(t, &inputs).unwrap();
    assert!(
        script.contains(&format!("CONSOLE_CA='{pem}'")),
        "{script:.600}"
    );
    assert!(
        script.contains("\nCONSOLE_URLS='https://console-a.example.com:8443 https://console-b.example.com:8443'\n"),
        "{script:.600}"
    );
    // Every agent URL is checked, by the flag's name: one scheme for all, so the CA pin holds
    // for each; no credentials, query or shell text.
    for bad in [
        "http://console-b.example.com:8080",
        "https://u:p@console-b.example.com",
        "https://b.example.com/?x=1",
        "https://b.example.com/$(touch /tmp/x)",
        "https://b.example.com a",
    ] {
        let urls = [
            "https://console-a.example.com:8443".to_owned(),
            bad.to_owned(),
        ];
        let inputs = render::InstallInputs {
            agent_urls: &urls,
            ..inputs.clone()
        };
        let err = render::install_sh(t, &inputs).unwrap_err().to_string();
        assert!(err.contains("--agent-url"), "{bad}: {err}");
    }
    // A CA is refused over plain HTTP, and anything but PEM certificates is refused.
    let http = render::InstallInputs {
        console_url: "http://console.example.com:8080",
        ..inputs.clone()
    };
    let err = render::install_sh(t, &http).unwrap_err().to_string();
    assert!(
        err.contains("--console-ca") && err.contains("https://"),
        "{err}"
    );
    for bad in [
        "hello",
        "-----BEGIN CERTIFICATE-----\n$(touch /tmp/x)\n-----END CERTIFICATE-----",
    ] {
        let inputs = render::InstallInputs {
            console_ca: Some(bad),
            ..inputs.clone()
        };
        let err = render::install_sh(t, &inputs).unwrap_err().to_string();
        assert!(err.contains("--console-ca"), "{err}");
    }
    script
}

fn shellcheck(script: &Path) {
    let out = tool("shellcheck")
        .args(["--shell=sh", "--severity=style"])
        .arg(script)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck {}:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn rendered_init_scripts_pass_shellcheck() {
    let t = Templates::embedded().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (name, layout) in [("script", Layout::script()), ("package", Layout::package())] {
        for (kind, text) in [
            ("init", render::init(&t, &layout).unwrap()),
            ("serverctl", render::serverctl(&t, &layout).unwrap()),
            (
                "root-serverctl",
                render::root_serverctl(&t, &layout).unwrap(),
            ),
            ("install", install_script(&t)),
            ("install-tls", install_script_with_ca(&t)),
            (
                "install-refused",
                render::refused_install_sh(
                    &t,
                    "http://console.example.com:8080",
                    None,
                    "this install link was used at 2026-11-24T10:00:00Z by server vm; it's spent",
                )
                .unwrap(),
            ),
        ] {
            let path = dir.path().join(format!("{kind}-{name}"));
            std::fs::write(&path, text).unwrap();
            shellcheck(&path);
            for shell in SHELLS {
                let out = tool(shell[0])
                    .args(&shell[1..])
                    .arg("-n")
                    .arg(&path)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{shell:?} -n {kind}-{name}: {}",
                    stderr(&out)
                );
            }
        }
    }
}

#[test]
fn hostile_paths_in_the_init_script_stay_data() {
    let t = Templates::embedded().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let canary = dir.path().join("canary");
    let c = canary.display();
    let mut layout = Layout::script();
    layout.bin = format!("/nonexistent/it's $(touch {c})`touch {c}`;touch {c}/tasknode");
    layout.config = format!("/tmp/\"$(touch {c})\"\ntouch {c}");
    layout.pid_file = dir.path().join("run/$(touch x).pid").display().to_string();
    let script = dir.path().join("tasknode");
    // The script runs itself again as the agent user: here, whoever runs the test.
    layout.init_script = script.display().to_string();
    layout.user = current_user();
    std::fs::write(&script, render::init(&t, &layout).unwrap()).unwrap();
    for shell in SHELLS {
        for action in ["status", "start", "stop", "restart"] {
            let out = sh(shell, &script, action);
            assert!(
                !canary.exists(),
                "{shell:?} {action} ran a rendered value: {}",
                stderr(&out)
            );
        }
        let start = sh(shell, &script, "start");
        assert_eq!(
            start.status.code(),
            Some(5),
            "{shell:?}: a missing binary is LSB 5"
        );
        assert!(
            stderr(&start).contains("/nonexistent/it's $(touch"),
            "{}",
            stderr(&start)
        );
    }
}

#[test]
fn init_script_usage_and_status_without_a_running_agent() {
    let t = Templates::embedded().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::script();
    layout.pid_file = dir.path().join("run/tasknode.pid").display().to_string();
    let script = dir.path().join("tasknode");
    layout.init_script = script.display().to_string();
    layout.user = current_user();
    std::fs::write(&script, render::init(&t, &layout).unwrap()).unwrap();
    for shell in SHELLS {
        let status = sh(shell, &script, "status");
        assert_eq!(
            status.status.code(),
            Some(3),
            "{shell:?}: LSB says 3 for stopped"
        );
        assert!(String::from_utf8_lossy(&status.stdout).contains("stopped"));
        let usage = sh(shell, &script, "frobnicate");
        assert_eq!(usage.status.code(), Some(2));
        assert!(stderr(&usage).contains("Usage:"));
    }
    // A stale pid file is reported as such (LSB 1).
    std::fs::create_dir_all(dir.path().join("run")).unwrap();
    std::fs::write(&layout.pid_file, "999999\n").unwrap();
    let status = Command::new("sh")
        .arg(&script)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(1));
    // A pid file naming a live process that is not the agent: not running, and stop leaves
    // that process alone.
    let mut bystander = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(&layout.pid_file, format!("{}\n", bystander.id())).unwrap();
    let status = Command::new("sh")
        .arg(&script)
        .arg("status")
        .output()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(1),
        "a stranger's pid is not the agent"
    );
    let stop = Command::new("sh")
        .arg(&script)
        .arg("stop")
        .output()
        .unwrap();
    assert!(stop.status.success());
    assert!(
        bystander.try_wait().unwrap().is_none(),
        "stop signalled a process that is not the agent"
    );
    bystander.kill().unwrap();
    bystander.wait().unwrap();
}

#[test]
fn rendered_unit_passes_systemd_analyze_verify() {
    let t = Templates::embedded().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut layout = Layout::script();
    // verify insists that ExecStart names an executable that exists.
    layout.bin = bin("tasknode").display().to_string();
    let unit = dir.path().join("tasknode.service");
    std::fs::write(&unit, render::unit(&t, &layout).unwrap()).unwrap();
    let out = tool("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let messages = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    // Only complaints about this unit count; the host's own units are not ours to judge.
    let ours: Vec<&str> = messages
        .lines()
        .filter(|l| l.contains("tasknode.service"))
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify:\n{messages}"
    );
}
