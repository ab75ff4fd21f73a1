//! `user delete`, `user password`, `install-link list|revoke` and `audit`: taking access away
//! and reading who changed what.

use tasknode_protocol::access::{AuditPage, DeletedUserView, InstallLinkView};
use tasknode_protocol::validate;
use tasknode_protocol::wire::CreatedUser;

use super::{print_json, print_table};
use crate::cli::{AuditArgs, Global, InstallLinkCmd, Output};
use crate::client::AdminClient;

/// No body: the path names what is changed.
fn empty() -> serde_json::Value {
    serde_json::json!({})
}

pub async fn delete_user(client: &AdminClient, name: &str, out: Output) -> anyhow::Result<()> {
    validate::name("NAME", name)?;
    let gone: DeletedUserView = client
        .post(&format!("/api/v1/users/{name}/delete"), &empty())
        .await?;
    if out.json {
        return print_json(&gone);
    }
    println!(
        "Deleted user {} of project {}, with {} install link{} and {} web session{}.",
        gone.user_name,
        gone.project,
        gone.links_revoked,
        if gone.links_revoked == 1 { "" } else { "s" },
        gone.sessions_ended,
        if gone.sessions_ended == 1 { "" } else { "s" },
    );
    Ok(())
}

pub async fn replace_password(client: &AdminClient, name: &str, out: Output) -> anyhow::Result<()> {
    validate::name("NAME", name)?;
    let u: CreatedUser = client
        .post(&format!("/api/v1/users/{name}/password"), &empty())
        .await?;
    if out.json {
        return print_json(&u);
    }
    println!("user_name: {}", u.user_name);
    println!("password:  {}", u.password);
    println!("project:   {}", u.project);
    eprintln!(
        "The old password no longer works and the user's web sessions have ended. The new one is shown only this once."
    );
    Ok(())
}

pub async fn links(global: &Global, cmd: InstallLinkCmd) -> anyhow::Result<()> {
    let client = AdminClient::resolve(global)?;
    match cmd {
        InstallLinkCmd::List { project, out } => {
            if let Some(p) = &project {
                validate::name("--project", p)?;
            }
            let q: Vec<(&str, &str)> = project.iter().map(|p| ("project", p.as_str())).collect();
            let list: Vec<InstallLinkView> = client.get("/api/v1/install-links", &q).await?;
            if out.json {
                return print_json(&list);
            }
            let rows: Vec<_> = list
                .into_iter()
                .map(|l| {
                    vec![
                        l.id.to_string(),
                        l.project,
                        l.group,
                        l.user_name,
                        l.created_at,
                        l.expires_at,
                    ]
                })
                .collect();
            print_table(
                &["ID", "PROJECT", "GROUP", "USER", "CREATED", "EXPIRES"],
                &rows,
            );
        }
        InstallLinkCmd::Revoke { id, out } => {
            if id < 1 {
                anyhow::bail!(
                    "ID: an install link's id is a positive number (see install-link list)"
                );
            }
            let l: InstallLinkView = client
                .post(&format!("/api/v1/install-links/{id}/revoke"), &empty())
                .await?;
            if out.json {
                return print_json(&l);
            }
            println!(
                "Revoked install link {} (group {}, user {}): its script is refused from now on.",
                l.id, l.group, l.user_name
            );
        }
    }
    Ok(())
}

pub async fn audit(global: &Global, args: AuditArgs) -> anyhow::Result<()> {
    let client = AdminClient::resolve(global)?;
    let limit = args.limit.to_string();
    let before = args.before.map(|b| b.to_string());
    let mut q = vec![("limit", limit.as_str())];
    if let Some(b) = &before {
        q.push(("before", b.as_str()));
    }
    let page: AuditPage = client.get("/api/v1/audit", &q).await?;
    if args.out.json {
        return print_json(&page);
    }
    let rows: Vec<_> = page
        .entries
        .into_iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                e.at,
                e.actor,
                e.action,
                e.project.unwrap_or_else(|| "-".to_owned()),
                e.object,
            ]
        })
        .collect();
    print_table(&["ID", "AT", "ACTOR", "ACTION", "PROJECT", "OBJECT"], &rows);
    if let Some(next) = page.next_before {
        eprintln!("Older entries: tasknode-console audit --before {next}");
    }
    Ok(())
}
