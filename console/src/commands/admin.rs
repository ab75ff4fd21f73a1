//! The admin commands: clients of a running console's API.

use tasknode_protocol::updates::UpdateView;
use tasknode_protocol::wire::{
    AddServer, CreateGroup, CreateInstallCommand, CreateProject, CreateUser, CreatedUser,
    DeleteGroup, DeletedGroupView, GroupView, InstallCommand, MoveServer, ProjectView, RemoveMode,
    RemoveServer, RemovedServerView, RenameGroup, ServerView, UserView,
};
use tasknode_protocol::{NetworkType, validate};

use super::{print_json, print_table};
use crate::cli::{Global, GroupCmd, InstallCommandArgs, Network, ProjectCmd, ServerCmd, UserCmd};
use crate::client::{AdminClient, ClientError};

/// How often `server remove --drain` asks whether the server is gone.
const DRAIN_POLL: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn project(global: &Global, cmd: ProjectCmd) -> anyhow::Result<()> {
    let client = AdminClient::resolve(global)?;
    match cmd {
        ProjectCmd::Create { name, out } => {
            validate::name("NAME", &name)?;
            let p: ProjectView = client
                .post("/api/v1/projects", &CreateProject { name })
                .await?;
            if out.json {
                return print_json(&p);
            }
            println!("created project {}", p.name);
        }
        ProjectCmd::List { out } => {
            let list: Vec<ProjectView> = client.get("/api/v1/projects", &[]).await?;
            if out.json {
                return print_json(&list);
            }
            let rows: Vec<_> = list
                .into_iter()
                .map(|p| vec![p.name, p.created_at])
                .collect();
            print_table(&["PROJECT", "CREATED"], &rows);
        }
    }
    Ok(())
}

pub async fn user(global: &Global, cmd: UserCmd) -> anyhow::Result<()> {
    let client = AdminClient::resolve(global)?;
    match cmd {
        UserCmd::Create { name, project, out } => {
            validate::name("NAME", &name)?;
            validate::name("--project", &project)?;
            let u: CreatedUser = client
                .post("/api/v1/users", &CreateUser { name, project })
                .await?;
            if out.json {
                return print_json(&u);
            }
            println!("user_name: {}", u.user_name);
            println!("password:  {}", u.password);
            println!("project:   {}", u.project);
            eprintln!("The password is shown only this once; keep it in a password manager.");
        }
        UserCmd::List { project, out } => {
            let q: Vec<(&str, &str)> = project.iter().map(|p| ("project", p.as_str())).collect();
            let list: Vec<UserView> = client.get("/api/v1/users", &q).await?;
            if out.json {
                return print_json(&list);
            }
            let rows: Vec<_> = list
                .into_iter()
                .map(|u| vec![u.user_name, u.project, u.created_at])
                .collect();
            print_table(&["USER", "PROJECT", "CREATED"], &rows);
        }
        UserCmd::Delete { name, out } => super::access::delete_user(&client, &name, out).await?,
        UserCmd::Password { name, out } => {
            super::access::replace_password(&client, &name, out).await?;
        }
    }
    Ok(())
}

pub async fn group(global: &Global, cmd: GroupCmd) -> anyhow::Result<()> {
    let client = AdminClient::resolve(global)?;
    match cmd {
        GroupCmd::Create {
            name,
            network,
            project,
            out,
        } => {
            validate::name("NAME", &name)?;
            validate::name("--project", &project)?;
            let network = match network {
                Network::Classic => NetworkType::Classic,
                Network::Vpc => NetworkType::Vpc,
            };
            let g: GroupView = client
                .post(
                    "/api/v1/groups",
                    &CreateGroup {
                        name,
                        project,
                        network,
                    },
                )
                .await?;
            if out.json {
                return print_json(&g);
            }
            println!(
                "created {} resource group {} in project {}: add servers by {}",
                g.network,
                g.name,
                g.project,
                g.network.identity_kind()
            );
        }
        GroupCmd::List { project, out } => {
            let q: Vec<(&str, &str)> = project.iter().map(|p| ("project", p.as_str())).collect();
            let list: Vec<GroupView> = client.get("/api/v1/groups", &q).await?;
            if out.json {
                return print_json(&list);
            }
            let rows: Vec<_> = list
                .into_iter()
                .map(|g| {
                    vec![
                        g.name,
                        g.project,
                        g.network.to_string(),
                        g.servers.to_string(),
                        g.created_at,
                    ]
                })
                .collect();
            print_table(
                &["GROUP", "PROJECT", "NETWORK", "SERVERS", "CREATED"],
                &rows,
            );
        }
        GroupCmd::Rename {
            group,
            to,
            project,
            out,
        } => {
            validate::name("--group", &group)?;
            validate::name("--to", &to)?;
            validate::name("--project", &project)?;
            let body = RenameGroup {
                name: group.clone(),
                project,
                new_name: to,
            };
            let g: GroupView = client.post("/api/v1/groups/rename", &body).await?;
            if out.json {
                return print_json(&g);
            }
            println!(
                "renamed resource group {group} of project {} to {}",
                g.project, g.name
            );
        }
        GroupCmd::Delete {
            group,
            project,
            out,
        } => {
            validate::name("--group", &group)?;
            validate::name("--project", &project)?;
            let body = DeleteGroup {
                name: group,
                project,
            };
            let d: DeletedGroupView = client.post("/api/v1/groups/delete", &body).await?;
            if out.json {
                return print_json(&d);
            }
            let n = d.deleted_tasks.len();
            println!(
                "deleted resource group {} of project {} with {n} finished task{}",
                d.name,
                d.project,
                if n == 1 { "" } else { "s" }
            );
        }
    }
    Ok(())
}

pub async fn server(global: &Global, cmd: ServerCmd) -> anyhow::Result<()> {
    let client = AdminClient::resolve(global)?;
    match cmd {
        ServerCmd::Add {
            group,
            name,
            max_concurrency,
            project,
            out,
        } => {
            validate::name("--group", &group)?;
            validate::name("--project", &project)?;
            let body = AddServer {
                project,
                group,
                name,
                max_concurrency,
            };
            let s: ServerView = client.post("/api/v1/servers", &body).await?;
            if out.json {
                return print_json(&s);
            }
            println!(
                "added server {} to {} group {} ({}): {}",
                s.name, s.network, s.group, s.status, s.reason
            );
        }
        ServerCmd::Remove {
            name,
            project,
            drain,
            no_wait,
            force,
            out,
        } => {
            validate::name("--project", &project)?;
            let mode = match (drain, force) {
                (true, _) => RemoveMode::Drain,
                (_, true) => RemoveMode::Force,
                _ => RemoveMode::Refuse,
            };
            let body = RemoveServer {
                project,
                name,
                mode,
            };
            let mut said: Option<RemovedServerView> = None;
            let r = loop {
                let answer: Result<RemovedServerView, _> =
                    client.post("/api/v1/servers/remove", &body).await;
                let r: RemovedServerView = match (answer, said.take()) {
                    (Ok(r), last) => {
                        // Draining: say so when what it holds changes, and ask again until
                        // it is gone.
                        if r.state == "draining"
                            && !no_wait
                            && !out.json
                            && last.as_ref().map(|l| &l.holding) != Some(&r.holding)
                        {
                            eprintln!("{}", r.message);
                        }
                        r
                    }
                    // Its agent's last task report removed it between two looks.
                    (Err(ClientError::Refused { status: 404, .. }), Some(last)) => {
                        break RemovedServerView {
                            state: "removed".to_owned(),
                            holding: Vec::new(),
                            message: format!(
                                "server {} was removed from group {} of project {} once its tasks finished; its agent is told at its next call and stops asking for work",
                                last.name, last.group, last.project
                            ),
                            ..last
                        };
                    }
                    (Err(e), _) => return Err(e.into()),
                };
                if r.state != "draining" || no_wait {
                    break r;
                }
                said = Some(r);
                tokio::time::sleep(DRAIN_POLL).await;
            };
            if out.json {
                return print_json(&r);
            }
            println!("{}", r.message);
        }
        ServerCmd::Move {
            name,
            to,
            project,
            out,
        } => {
            validate::name("--project", &project)?;
            validate::name("--to", &to)?;
            let body = MoveServer {
                project,
                name,
                group: to,
            };
            let s: ServerView = client.post("/api/v1/servers/move", &body).await?;
            if out.json {
                return print_json(&s);
            }
            println!(
                "moved server {} to group {} of project {} ({}): {}",
                s.name, s.group, s.project, s.status, s.reason
            );
        }
        ServerCmd::List {
            group,
            project,
            out,
        } => {
            let mut q: Vec<(&str, &str)> = Vec::new();
            if let Some(g) = &group {
                q.push(("group", g));
            }
            if let Some(p) = &project {
                q.push(("project", p));
            }
            let list: Vec<ServerView> = client.get("/api/v1/servers", &q).await?;
            if out.json {
                return print_json(&list);
            }
            let dash = || "-".to_owned();
            let rows: Vec<_> = list
                .into_iter()
                .map(|s| {
                    let (update, reason) = update_cells(s.update.as_ref(), s.reason);
                    vec![
                        s.name,
                        s.group,
                        s.network.to_string(),
                        s.status.to_string(),
                        s.max_concurrency.map_or_else(dash, |n| n.to_string()),
                        s.last_heartbeat.unwrap_or_else(dash),
                        s.version.unwrap_or_else(dash),
                        update,
                        reason,
                    ]
                })
                .collect();
            print_table(
                &[
                    "NAME",
                    "GROUP",
                    "NETWORK",
                    "STATUS",
                    "MAX",
                    "LAST HEARTBEAT",
                    "VERSION",
                    "UPDATE",
                    "REASON",
                ],
                &rows,
            );
        }
    }
    Ok(())
}

/// The UPDATE cell of a server (its update state and the version its group's rollout wants),
/// and its REASON cell: the status reason, then why an update failed or what to run instead.
fn update_cells(update: Option<&UpdateView>, reason: String) -> (String, String) {
    let Some(u) = update else {
        return ("-".to_owned(), reason);
    };
    let cell = if u.state == "current" {
        u.state.clone()
    } else {
        format!("{} {}", u.state, u.desired_version)
    };
    let reason = match u.state.as_str() {
        "failed" | "managed" => format!("{reason}; update to {}: {}", u.desired_version, u.reason),
        _ => reason,
    };
    (cell, reason)
}

pub async fn install_command(global: &Global, args: InstallCommandArgs) -> anyhow::Result<()> {
    validate::name("--group", &args.group)?;
    validate::name("--user", &args.user)?;
    validate::name("--project", &args.project)?;
    if args.ttl.as_secs() > tasknode_protocol::wire::MAX_TOKEN_TTL_SECS {
        anyhow::bail!("--ttl: an install command works for at most 7 days (168h)");
    }
    let client = AdminClient::resolve(global)?;
    let body = CreateInstallCommand {
        project: args.project,
        group: args.group,
        user_name: args.user,
        ttl_secs: Some(args.ttl.as_secs().max(1)),
    };
    let c: InstallCommand = client.post("/api/v1/install-commands", &body).await?;
    if args.out.json {
        return print_json(&c);
    }
    println!(
        "Run this as root on the server to add to {} group {} (enable_uuid={}):",
        c.network, c.group, c.enable_uuid
    );
    println!();
    println!("  {}", c.command);
    println!();
    println!("Without curl (GNU wget):  {}", c.wget_command);
    if let Some(sha) = &c.ca_sha256 {
        println!("It trusts only the console's CA, SHA-256 {sha}.");
    }
    println!(
        "It works once, until {}; it is a credential until then: keep it out of tickets and chat.",
        c.expires_at
    );
    Ok(())
}
