//! Durable protocol state and history in SQLite (WAL, `synchronous=FULL`): a record is on disk
//! before any message that depends on it is sent.

use entente_proto::link::LinkState;
use entente_proto::node::{Durable, NodeRecord, Record};
use entente_proto::NodeId;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;

/// The layout this release writes, kept in SQLite's `user_version`. 1 is the layout of the
/// first releases, which did not record a version (it reads as 0); 2 records it. An upgrade
/// step per version is applied in [`Db::open`], in one transaction.
pub const SCHEMA_VERSION: i64 = 2;

/// The agent's database.
pub struct Db {
    conn: Connection,
    /// Records written since the last commit.
    pending: Vec<Record>,
    /// The file did not exist before this open (a first start, or a lost store).
    created: bool,
}

/// A database failure (always fatal to the operation that hit it).
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite refused.
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The file was written by a newer release, whose layout this one does not know.
    #[error("state database: schema version {found} is newer than this release's {supported}: run the newer entented, or move the file away to start from an empty store")]
    Newer {
        /// The version found in the file.
        found: i64,
        /// The newest version this release reads.
        supported: i64,
    },
    /// A stored record does not decode: the file was damaged or written by another version.
    #[error("state database: record {key:?} does not decode: {message}")]
    Corrupt {
        /// The record's key.
        key: String,
        /// The decoder's message.
        message: String,
    },
}

fn link_key(peer: NodeId) -> String {
    format!("link:{}", peer.0)
}

impl Db {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let created = !path.exists();
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = conn.transaction()?;
        let found: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(DbError::Newer {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        // Version 0/1 (unversioned) to 2: the tables are the same; the version is recorded.
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS history (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 at_ms INTEGER NOT NULL,
                 event TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
        )?;
        if found < SCHEMA_VERSION {
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        // A file that exists but never counted a start (empty, or restored from nothing) is as
        // good as a new one.
        let started: i64 =
            tx.query_row("SELECT COUNT(*) FROM meta WHERE key = 'starts'", [], |r| {
                r.get(0)
            })?;
        let created = created || started == 0;
        tx.commit()?;
        Ok(Db {
            conn,
            pending: Vec::new(),
            created,
        })
    }

    /// Whether this open created the file: a first start, or a store that was lost.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Everything persisted, for `Node::new`.
    pub fn load(&self) -> Result<Durable, DbError> {
        let mut durable = Durable::default();
        let mut stmt = self.conn.prepare("SELECT key, value FROM records")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (key, value) = row?;
            let corrupt = |e: serde_json::Error| DbError::Corrupt {
                key: key.clone(),
                message: e.to_string(),
            };
            if key == "node" {
                let rec: NodeRecord = serde_json::from_str(&value).map_err(corrupt)?;
                durable.apply(&Record::Node(rec));
            } else if let Some(peer) = key.strip_prefix("link:") {
                let peer: u64 = peer.parse().map_err(|_| DbError::Corrupt {
                    key: key.clone(),
                    message: "bad peer id".into(),
                })?;
                let state: LinkState = serde_json::from_str(&value).map_err(corrupt)?;
                durable.apply(&Record::Link(NodeId(peer), state));
            }
        }
        Ok(durable)
    }

    /// Queues a record; [`Db::commit`] makes it durable.
    pub fn stage(&mut self, record: Record) {
        self.pending.push(record);
    }

    /// Whether records wait for a commit.
    pub fn dirty(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Writes every queued record in one transaction, durably.
    pub fn commit(&mut self) -> Result<(), DbError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut put =
                tx.prepare_cached("INSERT OR REPLACE INTO records (key, value) VALUES (?1, ?2)")?;
            for r in self.pending.drain(..) {
                let (key, value) = match &r {
                    Record::Node(n) => ("node".to_owned(), serde_json::to_string(n)),
                    Record::Link(p, s) => (link_key(*p), serde_json::to_string(s)),
                };
                put.execute(params![key, value.expect("records serialise")])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Appends a history entry.
    pub fn history(&self, at_ms: u64, event: &str) -> Result<(), DbError> {
        self.conn.execute(
            "INSERT INTO history (at_ms, event) VALUES (?1, ?2)",
            params![at_ms as i64, event],
        )?;
        Ok(())
    }

    /// The last `limit` history entries, oldest first.
    pub fn recent_history(&self, limit: u32) -> Result<Vec<(u64, String)>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT at_ms, event FROM history ORDER BY id DESC LIMIT ?1")?;
        let mut rows: Vec<(u64, String)> = stmt
            .query_map([limit], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        rows.reverse();
        Ok(rows)
    }

    /// The window of the firmware the device runs, once an activation recorded it.
    pub fn running_window(&self) -> Result<Option<entente_proto::Window>, DbError> {
        let get = |k: &str| -> Result<Option<i64>, DbError> {
            Ok(self
                .conn
                .query_row("SELECT value FROM meta WHERE key = ?1", [k], |r| r.get(0))
                .optional()?)
        };
        Ok(match (get("running_min")?, get("running_max")?) {
            (Some(a), Some(b)) => Some(entente_proto::Window::new(a as u64, b as u64)),
            _ => None,
        })
    }

    /// Records the window of the firmware the device now runs (durably).
    pub fn set_running_window(&self, w: entente_proto::Window) -> Result<(), DbError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('running_min', ?1), ('running_max', ?2)",
            params![w.min.0 as i64, w.max.0 as i64],
        )?;
        Ok(())
    }

    /// The last operator statement applied here (its line), if any.
    pub fn statement(&self) -> Result<Option<String>, DbError> {
        Ok(self
            .conn
            .query_row(
                "SELECT value FROM records WHERE key = 'operator_statement'",
                [],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Records the operator statement being applied (durably, before the protocol sees it).
    pub fn set_statement(&self, line: &str) -> Result<(), DbError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO records (key, value) VALUES ('operator_statement', ?1)",
            [line],
        )?;
        Ok(())
    }

    /// Bumps and returns the start counter (the incarnation hint of a node with no records).
    pub fn next_start(&self) -> Result<u32, DbError> {
        let cur: Option<i64> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'starts'", [], |r| {
                r.get(0)
            })
            .optional()?;
        let next = cur.unwrap_or(0) + 1;
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('starts', ?1)",
            [next],
        )?;
        Ok(next as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopening() {
        let dir = std::env::temp_dir().join(format!("entente-db-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        let mut db = Db::open(&path).unwrap();
        let rec = NodeRecord {
            staged: true,
            ..NodeRecord::default()
        };
        db.stage(Record::Node(rec.clone()));
        db.stage(Record::Link(
            NodeId(4),
            LinkState::established(entente_proto::Epoch(3)),
        ));
        db.commit().unwrap();
        db.history(5, "hello").unwrap();
        assert_eq!(db.next_start().unwrap(), 1);
        drop(db);
        let db = Db::open(&path).unwrap();
        let d = db.load().unwrap();
        assert_eq!(d.node, Some(rec));
        assert_eq!(d.links[0].0, NodeId(4));
        assert_eq!(d.links[0].1.committed, entente_proto::Epoch(3));
        assert_eq!(
            db.recent_history(10).unwrap(),
            vec![(5, "hello".to_owned())]
        );
        assert_eq!(db.next_start().unwrap(), 2);
    }

    /// A state store written before the schema was versioned (records, history and meta tables,
    /// no `user_version`) is upgraded in place, keeping what it held; a store from a newer
    /// release is refused, naming both versions.
    #[test]
    fn state_db_upgrade() {
        let dir = std::env::temp_dir().join(format!("entente-db-upgrade-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        let _ = std::fs::remove_file(&path);
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(
                "CREATE TABLE records (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                 CREATE TABLE history (id INTEGER PRIMARY KEY AUTOINCREMENT,
                     at_ms INTEGER NOT NULL, event TEXT NOT NULL);
                 CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
                 INSERT INTO meta VALUES ('starts', 7);
                 INSERT INTO history (at_ms, event) VALUES (1, 'campaign 1 started here');",
            )
            .unwrap();
            let link =
                serde_json::to_string(&LinkState::established(entente_proto::Epoch(2))).unwrap();
            old.execute("INSERT INTO records VALUES ('link:9', ?1)", [link])
                .unwrap();
        }
        let db = Db::open(&path).unwrap();
        let version: i64 = db
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 2);
        let d = db.load().unwrap();
        assert_eq!(d.links[0].1.committed, entente_proto::Epoch(2));
        assert_eq!(db.recent_history(5).unwrap().len(), 1);
        assert_eq!(db.next_start().unwrap(), 8);
        drop(db);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Db::open(&path)
            .err()
            .expect("a newer store was opened")
            .to_string();
        assert!(err.contains("99") && err.contains('2'), "{err}");
    }
}
