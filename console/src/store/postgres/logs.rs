//! Task logs in the shared store: a log's size in `task_logs`, its bytes in `task_log_chunks`,
//! one row per push, keyed by where the chunk starts. A push locks its log's row, so pushes
//! of one log through several consoles keep its order; the server's total is summed over its
//! tasks' logs in the same transaction. Two logs of one server pushed at the same moment may
//! each see the other's bytes not yet counted, so a server can pass its limit by what its
//! pushes in flight carry (at most a chunk each).

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;

use super::{Cached, PostgresStore, col, db, snapshot, to_i64};
use crate::store::StoreError;
use crate::store::logs::{Appended, LogLimits, Plan, TaskLogStore, plan};

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

#[async_trait]
impl TaskLogStore for PostgresStore {
    async fn log_sizes(&self, tasks: &[i64]) -> Result<HashMap<i64, u64>, StoreError> {
        let c = self.client().await?;
        let rows = c
            .query(
                "SELECT task_id, size FROM task_logs WHERE task_id = ANY($1) AND size > 0",
                &[&tasks],
            )
            .await
            .map_err(db("reading task logs' sizes"))?;
        let mut sizes = HashMap::with_capacity(rows.len());
        for r in &rows {
            sizes.insert(col(r, 0)?, to_u64(col(r, 1)?));
        }
        Ok(sizes)
    }

    async fn append_log(
        &self,
        task: i64,
        server: i64,
        offset: u64,
        bytes: Bytes,
        limits: LogLimits,
    ) -> Result<Appended, StoreError> {
        const OP: &str = "keeping a pushed task log";
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(db(OP))?;
        tx.exec(
            "INSERT INTO task_logs (task_id, size) VALUES ($1, 0) ON CONFLICT (task_id) DO NOTHING",
            &[&task],
        )
        .await
        .map_err(db(OP))?;
        let size = tx
            .q_one(
                "SELECT size FROM task_logs WHERE task_id = $1 FOR UPDATE",
                &[&task],
            )
            .await
            .map_err(db(OP))?;
        let size = to_u64(col(&size, 0)?);
        let total = tx
            .q_one(
                "SELECT COALESCE(sum(l.size), 0)::BIGINT
                 FROM task_logs l JOIN tasks t ON t.id = l.task_id
                 WHERE t.server_id = $1",
                &[&server],
            )
            .await
            .map_err(db(OP))?;
        let server_total = to_u64(col(&total, 0)?);
        let (skip, take) = match plan(size, offset, bytes.len(), server_total, limits) {
            // Dropping the transaction rolls back the empty row it may have made.
            Plan::Answer(a) => return Ok(a),
            Plan::Keep { skip, take } => (skip, take),
        };
        let new = &bytes[skip..skip + take];
        let end = size + take as u64;
        tx.exec(
            "INSERT INTO task_log_chunks (task_id, start, data) VALUES ($1, $2, $3)",
            &[&task, &to_i64(size), &new],
        )
        .await
        .map_err(db(OP))?;
        tx.exec(
            "UPDATE task_logs SET size = $2 WHERE task_id = $1",
            &[&task, &to_i64(end)],
        )
        .await
        .map_err(db(OP))?;
        tx.commit().await.map_err(db(OP))?;
        Ok(Appended::Size(end))
    }

    async fn read_log(
        &self,
        task: i64,
        offset: u64,
        max: usize,
    ) -> Result<(Vec<u8>, u64), StoreError> {
        const OP: &str = "reading a task log";
        let mut c = self.client().await?;
        // The size and the chunks from one snapshot.
        let tx = snapshot(&mut c, OP).await?;
        let Some(row) = tx
            .query_opt("SELECT size FROM task_logs WHERE task_id = $1", &[&task])
            .await
            .map_err(db(OP))?
        else {
            return Ok((Vec::new(), 0));
        };
        let size = to_u64(col(&row, 0)?);
        if offset >= size || max == 0 {
            return Ok((Vec::new(), size));
        }
        let end = offset.saturating_add(max as u64).min(size);
        // The chunk holding `offset`, and those after it that start before `end`.
        let rows = tx
            .query(
                "SELECT start, data FROM task_log_chunks
                 WHERE task_id = $1 AND start < $3 AND start >= COALESCE(
                     (SELECT max(start) FROM task_log_chunks WHERE task_id = $1 AND start <= $2), 0)
                 ORDER BY start",
                &[&task, &to_i64(offset), &to_i64(end)],
            )
            .await
            .map_err(db(OP))?;
        let mut out = Vec::with_capacity(usize::try_from(end - offset).unwrap_or(0));
        for r in &rows {
            let start = to_u64(col(r, 0)?);
            let data: &[u8] = col(r, 1)?;
            // This chunk's part of [offset + what we have, end).
            let from = offset + out.len() as u64;
            let lo = usize::try_from(from.saturating_sub(start)).unwrap_or(usize::MAX);
            let hi = usize::try_from(end.saturating_sub(start)).unwrap_or(usize::MAX);
            if start > from || lo >= data.len() {
                break;
            }
            out.extend_from_slice(&data[lo..hi.min(data.len())]);
        }
        Ok((out, size))
    }

    async fn remove_logs(&self, tasks: &[i64]) -> Result<(), StoreError> {
        let c = self.client().await?;
        c.execute("DELETE FROM task_logs WHERE task_id = ANY($1)", &[&tasks])
            .await
            .map_err(db("removing task logs"))?;
        Ok(())
    }
}
