//! One store test suite for both backends: each test is written against `dyn Store` and run
//! once on a throwaway SQLite database and once on a fresh database of the test binary's
//! throwaway PostgreSQL cluster (`tasknode-pgtest`). What only one backend has (SQLite's
//! migrations from older schemas, its sync mode; PostgreSQL's concurrent consoles) is tested
//! beside that backend.

mod access;
mod leases;
mod liveness;
mod logs;
mod projects;
mod releases;
mod removal;
mod secrets;
pub(crate) mod servers;
mod tasks;

use async_trait::async_trait;
use tasknode_pgtest::{Cluster, Database};

use super::{PostgresStore, SqliteStore, Store};

/// A backend under test, with one database for the test.
#[async_trait]
pub(crate) trait Harness: Send + Sync {
    /// The store, opened (again) on the test's database.
    async fn open(&self) -> Box<dyn Store>;
    /// Rows in `table` whose `column` is `id`, read past the store's API.
    async fn count(&self, table: &str, column: &str, id: i64) -> i64;
    /// Rows in `table`, read past the store's API.
    async fn rows(&self, table: &str) -> i64;
    /// Rows that refer to a row that is not there.
    async fn dangling_references(&self) -> i64;
}

pub(crate) struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    pub(crate) fn new() -> Sqlite {
        Sqlite {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("t.db")
    }

    fn query(&self, sql: &str, id: Option<i64>) -> i64 {
        let conn = rusqlite::Connection::open(self.path()).unwrap();
        match id {
            Some(id) => conn.query_row(sql, [id], |r| r.get(0)),
            None => conn.query_row(sql, [], |r| r.get(0)),
        }
        .unwrap()
    }
}

#[async_trait]
impl Harness for Sqlite {
    async fn open(&self) -> Box<dyn Store> {
        Box::new(SqliteStore::open(&self.path()).unwrap())
    }

    async fn count(&self, table: &str, column: &str, id: i64) -> i64 {
        self.query(
            &format!("SELECT COUNT(*) FROM {table} WHERE {column} = ?1"),
            Some(id),
        )
    }

    async fn rows(&self, table: &str) -> i64 {
        self.query(&format!("SELECT COUNT(*) FROM {table}"), None)
    }

    async fn dangling_references(&self) -> i64 {
        self.query("SELECT COUNT(*) FROM pragma_foreign_key_check", None)
    }
}

pub(crate) struct Postgres {
    pub(crate) db: Database,
}

impl Postgres {
    pub(crate) fn new() -> Postgres {
        Postgres {
            db: Cluster::shared().database(),
        }
    }

    pub(crate) async fn connect(&self) -> Result<PostgresStore, super::StoreError> {
        PostgresStore::connect(
            &self.db.url,
            Some(Cluster::shared().password()),
            super::Roots::System,
        )
        .await
    }

    pub(crate) fn psql(&self, sql: &str) -> String {
        Cluster::shared()
            .psql(&self.db.name, sql)
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

#[async_trait]
impl Harness for Postgres {
    async fn open(&self) -> Box<dyn Store> {
        Box::new(self.connect().await.unwrap_or_else(|e| panic!("{e}")))
    }

    async fn count(&self, table: &str, column: &str, id: i64) -> i64 {
        self.psql(&format!(
            "SELECT COUNT(*) FROM {table} WHERE {column} = {id}"
        ))
        .parse()
        .unwrap()
    }

    async fn rows(&self, table: &str) -> i64 {
        self.psql(&format!("SELECT COUNT(*) FROM {table}"))
            .parse()
            .unwrap()
    }

    async fn dangling_references(&self) -> i64 {
        // PostgreSQL checks every foreign key at each statement: there are none to find.
        0
    }
}

/// Runs each listed test once per backend, as `on_sqlite::NAME` and `on_postgres::NAME`.
macro_rules! suite {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$module::$name(&super::Sqlite::new()).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$module::$name(&super::Postgres::new()).await
                }
            )*
        }
    };
}

suite!(
    projects::state_survives_reopening_and_migrations_run_once,
    projects::a_renamed_group_keeps_its_servers_and_tasks,
    projects::a_group_with_servers_or_unfinished_tasks_is_not_deleted,
    projects::deleting_a_group_takes_its_tokens_finished_tasks_and_rollout,
    servers::a_server_is_in_at_most_one_group,
    servers::servers_are_found_by_id_and_unknown_ids_are_skipped,
    servers::a_token_is_spent_once_with_its_enrollment_and_not_after_expiry,
    servers::pending_names_do_not_block_other_projects_and_the_first_enrollment_wins,
    servers::a_refused_enrollment_leaves_its_token_unspent,
    removal::a_busy_server_is_removed_only_by_drain_or_force,
    removal::an_idle_last_server_is_refused_while_its_group_has_queued_tasks,
    removal::a_moved_server_keeps_its_identity_within_its_project_and_network,
    tasks::a_stale_lease_can_neither_start_nor_finish_a_task,
    tasks::a_start_or_finish_by_node_takes_only_its_servers_current_task,
    tasks::assignment_stops_at_max_concurrency_and_a_lost_task_is_not_run_again,
    tasks::a_look_squares_what_the_agent_holds_then_fills_its_free_slots,
    tasks::tasks_are_counted_per_group_and_state,
    tasks::a_key_makes_one_task_however_often_and_wherever_it_is_submitted,
    releases::a_published_version_never_changes_but_may_gain_a_rollback,
    releases::setting_a_rollout_again_starts_it_over,
    releases::only_the_latest_update_report_is_kept,
    secrets::sessions_are_capped_per_principal_and_in_all,
    secrets::expired_sessions_are_not_found_and_are_deleted,
    secrets::sessions_and_secrets_survive_reopening,
    secrets::consoles_storing_a_secret_at_once_all_get_the_first_one,
    secrets::pruning_keeps_the_newest_of_a_prefix_only,
    leases::a_lease_has_one_holder_until_it_expires_or_is_given_up,
    leases::a_step_fenced_by_a_lapsed_lease_changes_nothing,
    liveness::nodes_are_loaded_by_id_and_by_change_and_the_newest_heartbeat_wins,
    logs::a_pushed_log_is_kept_in_order_once_and_read_from_any_offset,
    logs::pushed_logs_stop_at_the_limits_per_task_and_per_server,
    access::a_deleted_user_takes_its_links_and_sessions_with_it,
    access::a_new_password_replaces_the_old_and_ends_the_users_sessions,
    access::only_unspent_unexpired_links_are_listed_and_revoked,
    access::the_audit_log_pages_newest_first_and_by_project,
);
