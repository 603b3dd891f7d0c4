//! The store-and-forward spool: messages not yet acknowledged by the broker, on disk.
//!
//! One SQLite database (write-ahead log, so a crash mid-write leaves the last committed state),
//! one row per message. A row's `id` is the message's sequence number, given in the order the
//! element handed the messages over; reading in `id` order is sending order. Rows are deleted
//! only once the broker acknowledged them (or when a limit drops them).
//!
//! The database is opened with an exclusive lock: two publishers on one spool would send each
//! other's messages, so the second one is refused until the first closes it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use super::Message;

/// Size and age limits of a spool; zero means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpoolLimits {
    /// Most bytes of topics and payloads kept; at the limit the oldest messages are dropped.
    pub max_bytes: u64,
    /// Messages older than this are dropped.
    pub max_age: Duration,
}

/// What enforcing the limits removed: always the oldest rows, so a prefix of the ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    /// Rows dropped because the spool was over `max_bytes`.
    pub by_size: u64,
    /// Rows dropped because they were older than `max_age`.
    pub by_age: u64,
    /// Highest id dropped (0 when nothing was).
    pub up_to: u64,
}

impl Dropped {
    pub fn total(&self) -> u64 {
        self.by_size + self.by_age
    }

    fn add(&mut self, other: Dropped) {
        self.by_size += other.by_size;
        self.by_age += other.by_age;
        self.up_to = self.up_to.max(other.up_to);
    }
}

/// A message read back from the spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spooled {
    pub id: u64,
    pub message: Message,
}

/// A spool operation that failed, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {}: {what}: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("spool {}: {what}: {source}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("spool {}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// Schema version kept in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 1;

/// Rows looked at per step while enforcing limits.
const ENFORCE_BATCH: i64 = 256;

pub struct Spool {
    conn: Connection,
    path: PathBuf,
    limits: SpoolLimits,
    /// Bytes of topics and payloads stored.
    bytes: u64,
    rows: u64,
    /// Highest id ever stored in this file (ids of new messages continue after it).
    max_id: u64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

fn sqlite_err(
    path: &Path,
    what: &'static str,
) -> impl FnOnce(rusqlite::Error) -> SpoolError + use<> {
    let path = path.to_path_buf();
    move |source| SpoolError::Sqlite { path, what, source }
}

/// Bytes a message counts for against `max_bytes`.
pub fn message_size(msg: &Message) -> u64 {
    (msg.topic.len() + msg.payload.len()) as u64
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Spool {
    /// Opens (creating it and its directory if needed) the spool at `path` and applies the
    /// limits to what a previous run left.
    pub fn open(path: &Path, limits: SpoolLimits) -> Result<(Spool, Dropped), SpoolError> {
        let err = |what: &'static str| {
            let path = path.to_path_buf();
            move |source| SpoolError::Sqlite { path, what, source }
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| SpoolError::Io {
                path: path.to_path_buf(),
                what: "creating its directory",
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(err("opening"))?;
        // rusqlite waits up to 5 s for a lock by default; a spool in use will stay in use.
        conn.busy_timeout(Duration::ZERO)
            .map_err(err("setting the busy timeout"))?;
        // Exclusive before WAL: the lock is held until close, and no shared-memory file is
        // needed.
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(err("setting the locking mode"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(err(
                "switching to write-ahead logging (is another publisher using it?)",
            ))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(SpoolError::Invalid {
                path: path.to_path_buf(),
                reason: format!("cannot use write-ahead logging (journal mode stays {mode})"),
            });
        }
        // NORMAL: a commit is atomic and survives a process crash; only a power loss can
        // forget the last commits, and never corrupts the file.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(err("setting synchronous mode"))?;
        // After a checkpoint, shrink the log back instead of keeping its largest size.
        conn.pragma_update(None, "journal_size_limit", 4 * 1024 * 1024)
            .map_err(err("limiting the log size"))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err("reading the schema version"))?;
        if version > SCHEMA_VERSION {
            return Err(SpoolError::Invalid {
                path: path.to_path_buf(),
                reason: format!(
                    "written by a newer plugin (schema {version}, this one knows {SCHEMA_VERSION})"
                ),
            });
        }
        // Writing the version takes the exclusive lock now rather than at the first message.
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS spool (
                 id INTEGER PRIMARY KEY,
                 created_ms INTEGER NOT NULL,
                 retain INTEGER NOT NULL,
                 topic TEXT NOT NULL,
                 payload BLOB NOT NULL
             );
             PRAGMA user_version = {SCHEMA_VERSION};
             COMMIT;"
        ))
        .map_err(err("creating the table (is another publisher using it?)"))?;
        let (rows, bytes, max_id): (i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), coalesce(sum(length(CAST(topic AS BLOB)) + length(payload)), 0),
                        coalesce(max(id), 0)
                 FROM spool",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .map_err(err("reading its size"))?;
        let mut spool = Spool {
            conn,
            path: path.to_path_buf(),
            limits,
            bytes: u64::try_from(bytes).unwrap_or(0),
            rows: u64::try_from(rows).unwrap_or(0),
            max_id: u64::try_from(max_id).unwrap_or(0),
        };
        let dropped = spool.enforce(now_ms())?;
        Ok((spool, dropped))
    }

    fn err(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> SpoolError + use<> {
        sqlite_err(&self.path, what)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of messages stored.
    pub fn len(&self) -> u64 {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes of topics and payloads stored.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Highest id ever stored in this file; new sequence numbers must continue after it.
    pub fn max_id(&self) -> u64 {
        self.max_id
    }

    /// Stores messages (id, creation time in ms since the epoch, message) in one transaction,
    /// then applies the limits. An id already present is left as it is (the same message).
    pub fn insert(&mut self, items: &[(u64, i64, &Message)]) -> Result<Dropped, SpoolError> {
        if items.is_empty() {
            return Ok(Dropped::default());
        }
        let tx = self
            .conn
            .transaction()
            .map_err(sqlite_err(&self.path, "starting a write"))?;
        let mut added_bytes = 0;
        let mut added_rows = 0;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO spool (id, created_ms, retain, topic, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sqlite_err(&self.path, "preparing a write"))?;
            for (id, created, msg) in items {
                let id = i64::try_from(*id).unwrap_or(i64::MAX);
                let n = stmt
                    .execute(params![id, created, msg.retain, msg.topic, msg.payload])
                    .map_err(sqlite_err(&self.path, "writing a message"))?;
                if n > 0 {
                    added_rows += 1;
                    added_bytes += message_size(msg);
                }
            }
        }
        tx.commit()
            .map_err(sqlite_err(&self.path, "committing a write"))?;
        self.rows += added_rows;
        self.bytes += added_bytes;
        let top = items.iter().map(|(id, _, _)| *id).max().unwrap_or(0);
        self.max_id = self.max_id.max(top);
        self.enforce(now_ms())
    }

    /// Up to `limit` messages with an id above `after`, oldest first.
    pub fn load_after(&self, after: u64, limit: usize) -> Result<Vec<Spooled>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, retain, topic, payload FROM spool WHERE id > ?1 ORDER BY id LIMIT ?2",
            )
            .map_err(self.err("preparing a read"))?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![after, limit], |r| {
                Ok(Spooled {
                    id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    message: Message {
                        retain: r.get(1)?,
                        topic: r.get(2)?,
                        payload: r.get(3)?,
                    },
                })
            })
            .map_err(self.err("reading messages"))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(self.err("reading messages"))
    }

    /// Deletes an acknowledged message; an id that is not there (already dropped) is fine.
    pub fn remove(&mut self, id: u64) -> Result<(), SpoolError> {
        let id = i64::try_from(id).unwrap_or(i64::MAX);
        let size: Option<i64> = self
            .conn
            .prepare_cached(
                "DELETE FROM spool WHERE id = ?1 RETURNING length(CAST(topic AS BLOB)) + length(payload)",
            )
            .and_then(|mut stmt| stmt.query_row([id], |r| r.get(0)).optional())
            .map_err(self.err("deleting an acknowledged message"))?;
        if let Some(size) = size {
            self.rows = self.rows.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(u64::try_from(size).unwrap_or(0));
        }
        Ok(())
    }

    /// Drops the oldest messages while the spool is over `max_bytes` or they are older than
    /// `max_age` (measured from `now_ms`).
    pub fn enforce(&mut self, now_ms: i64) -> Result<Dropped, SpoolError> {
        let max_bytes = self.limits.max_bytes;
        let cutoff = (!self.limits.max_age.is_zero()).then(|| {
            now_ms
                .saturating_sub(i64::try_from(self.limits.max_age.as_millis()).unwrap_or(i64::MAX))
        });
        let over = |bytes: u64| max_bytes > 0 && bytes > max_bytes;
        let mut total = Dropped::default();
        loop {
            // The usual case, checked cheaply: nothing to drop.
            let expired = match cutoff {
                Some(cutoff) => self
                    .conn
                    .prepare_cached("SELECT created_ms FROM spool ORDER BY id LIMIT 1")
                    .and_then(|mut stmt| stmt.query_row([], |r| r.get::<_, i64>(0)).optional())
                    .map_err(self.err("reading the oldest message"))?
                    .is_some_and(|created| created < cutoff),
                None => false,
            };
            if !expired && !over(self.bytes) {
                break;
            }
            let oldest: Vec<(i64, i64, i64)> = {
                let mut stmt = self
                    .conn
                    .prepare_cached(
                        "SELECT id, created_ms, length(CAST(topic AS BLOB)) + length(payload)
                         FROM spool ORDER BY id LIMIT ?1",
                    )
                    .map_err(self.err("reading the oldest messages"))?;
                let rows = stmt
                    .query_map([ENFORCE_BATCH], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(self.err("reading the oldest messages"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(self.err("reading the oldest messages"))?
            };
            let mut step = Dropped::default();
            let mut bytes = self.bytes;
            let mut last = None;
            for &(id, created, size) in &oldest {
                let size = u64::try_from(size).unwrap_or(0);
                if over(bytes) {
                    step.by_size += 1;
                } else if cutoff.is_some_and(|c| created < c) {
                    step.by_age += 1;
                } else {
                    break;
                }
                bytes = bytes.saturating_sub(size);
                last = Some(id);
            }
            let Some(last) = last else { break };
            self.conn
                .execute("DELETE FROM spool WHERE id <= ?1", [last])
                .map_err(self.err("dropping the oldest messages"))?;
            step.up_to = u64::try_from(last).unwrap_or(0);
            self.rows = self.rows.saturating_sub(step.total());
            self.bytes = bytes;
            total.add(step);
            if step.total() < oldest.len() as u64 {
                break;
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_not_characters() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("spool.db");
        let m = Message::new("caméra/états", "é");
        assert_eq!(message_size(&m), 16);
        {
            let (mut spool, _) = Spool::open(&path, NO_LIMITS)?;
            spool.insert(&[(1, 0, &m), (2, 0, &m)])?;
            spool.remove(1)?;
            assert_eq!(spool.bytes(), 16);
        }
        let (spool, _) = Spool::open(&path, NO_LIMITS)?;
        assert_eq!(spool.bytes(), 16);
        Ok(())
    }

    fn msg(i: u64, len: usize) -> Message {
        Message {
            topic: format!("t/{i}"),
            payload: vec![b'x'; len],
            retain: i.is_multiple_of(2),
        }
    }

    fn ids(spool: &Spool) -> Vec<u64> {
        spool
            .load_after(0, 10_000)
            .unwrap_or_default()
            .iter()
            .map(|s| s.id)
            .collect()
    }

    const NO_LIMITS: SpoolLimits = SpoolLimits {
        max_bytes: 0,
        max_age: Duration::ZERO,
    };

    #[test]
    fn keeps_order_and_contents() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sub/spool.db");
        let (mut spool, dropped) = Spool::open(&path, NO_LIMITS)?;
        assert_eq!(dropped.total(), 0);
        assert!(spool.is_empty());
        // Inserted out of order (as a stop spools in-memory messages after newer spilled
        // ones); read back in id order.
        let m: Vec<Message> = (0..6).map(|i| msg(i, 10)).collect();
        spool.insert(&[(3, 0, &m[3]), (4, 0, &m[4])])?;
        spool.insert(&[(1, 0, &m[1]), (2, 0, &m[2]), (5, 0, &m[5])])?;
        let got = spool.load_after(0, 100)?;
        assert_eq!(
            got.iter().map(|s| s.id).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(got[0].message, m[1]);
        assert_eq!(got[3].message, m[4]);
        assert_eq!(spool.len(), 5);
        assert_eq!(spool.bytes(), 5 * (3 + 10));
        assert_eq!(spool.max_id(), 5);
        // Paging.
        let page = spool.load_after(2, 2)?;
        assert_eq!(page.iter().map(|s| s.id).collect::<Vec<_>>(), [3, 4]);
        // Removing acknowledged rows, twice is harmless.
        spool.remove(3)?;
        spool.remove(3)?;
        assert_eq!(ids(&spool), [1, 2, 4, 5]);
        assert_eq!(spool.len(), 4);
        assert_eq!(spool.bytes(), 4 * 13);
        // The same id again is the same message: ignored.
        spool.insert(&[(4, 0, &m[0])])?;
        assert_eq!(spool.load_after(3, 1)?[0].message, m[4]);
        assert_eq!(spool.len(), 4);
        Ok(())
    }

    #[test]
    fn reopens_after_drop_and_locks_out_a_second_user() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("spool.db");
        let (mut spool, _) = Spool::open(&path, NO_LIMITS)?;
        let m = msg(7, 20);
        spool.insert(&[(7, 0, &m), (9, 0, &m)])?;
        spool.remove(9)?;
        let second = Spool::open(&path, NO_LIMITS);
        let err = second.expect_err("a second publisher on the same spool must be refused");
        assert!(err.to_string().contains("spool.db"), "{err}");
        drop(spool);
        let (spool, _) = Spool::open(&path, NO_LIMITS)?;
        assert_eq!(ids(&spool), [7]);
        assert_eq!(spool.len(), 1);
        assert_eq!(spool.bytes(), message_size(&m));
        // A new run numbers its messages after the rows that are left.
        assert_eq!(spool.max_id(), 7);
        Ok(())
    }

    #[test]
    fn size_limit_drops_the_oldest() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("spool.db");
        // Each message counts 3 + 97 = 100 bytes: 5 fit in 500.
        let limits = SpoolLimits {
            max_bytes: 500,
            max_age: Duration::ZERO,
        };
        let (mut spool, _) = Spool::open(&path, limits)?;
        let mut dropped = Dropped::default();
        for i in 1..=8 {
            dropped.add(spool.insert(&[(i, now_ms(), &msg(i, 97))])?);
        }
        assert_eq!(ids(&spool), [4, 5, 6, 7, 8]);
        assert_eq!(dropped.by_size, 3);
        assert_eq!(dropped.by_age, 0);
        assert_eq!(dropped.up_to, 3);
        assert_eq!(spool.bytes(), 500);
        // One message bigger than the whole limit cannot be kept either.
        let d = spool.insert(&[(9, now_ms(), &msg(9, 1000))])?;
        assert_eq!(d.by_size, 6);
        assert!(spool.is_empty());
        assert_eq!(spool.bytes(), 0);
        Ok(())
    }

    #[test]
    fn age_limit_expires_old_messages() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("spool.db");
        let limits = SpoolLimits {
            max_bytes: 0,
            max_age: Duration::from_secs(60),
        };
        let now = now_ms();
        {
            let (mut spool, _) = Spool::open(&path, NO_LIMITS)?;
            let m = msg(1, 5);
            spool.insert(&[
                (1, now - 120_000, &m),
                (2, now - 90_000, &m),
                (3, now - 1000, &m),
            ])?;
            assert_eq!(spool.len(), 3, "no limits: all kept");
        }
        // Reopening with an age limit drops what expired while the process was down.
        let (mut spool, dropped) = Spool::open(&path, limits)?;
        assert_eq!(dropped.by_age, 2);
        assert_eq!(dropped.up_to, 2);
        assert_eq!(ids(&spool), [3]);
        // And later, as time passes.
        let d = spool.enforce(now + 60_000)?;
        assert_eq!(d.by_age, 1);
        assert!(spool.is_empty());
        Ok(())
    }

    #[test]
    fn large_backlog_is_dropped_in_batches() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("spool.db");
        let (mut spool, _) = Spool::open(&path, NO_LIMITS)?;
        let m = msg(0, 7);
        let items: Vec<(u64, i64, &Message)> = (1..=1000).map(|i| (i, 0, &m)).collect();
        spool.insert(&items)?;
        drop(spool);
        let limits = SpoolLimits {
            max_bytes: 10 * message_size(&m),
            max_age: Duration::ZERO,
        };
        let (spool, dropped) = Spool::open(&path, limits)?;
        assert_eq!(dropped.by_size, 990);
        assert_eq!(dropped.up_to, 990);
        assert_eq!(ids(&spool), (991..=1000).collect::<Vec<_>>());
        Ok(())
    }

    /// Run only as the child of `survives_a_crash_mid_write`: inserts until it is killed.
    #[test]
    #[ignore = "helper process for survives_a_crash_mid_write"]
    fn crash_writer() -> anyhow::Result<()> {
        use std::io::Write;
        let Some(path) = std::env::var_os("VISION_SPOOL_CRASH_PATH") else {
            return Ok(());
        };
        let (mut spool, _) = Spool::open(Path::new(&path), NO_LIMITS)?;
        let mut out = std::io::stdout();
        for i in 1.. {
            let m = Message {
                topic: format!("crash/{i}"),
                payload: i.to_string().repeat(50).into_bytes(),
                retain: false,
            };
            spool.insert(&[(i, now_ms(), &m)])?;
            writeln!(out, "inserted {i}")?;
            out.flush()?;
        }
        Ok(())
    }

    #[test]
    fn survives_a_crash_mid_write() -> anyhow::Result<()> {
        use std::io::BufRead;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("spool.db");
        let mut child = std::process::Command::new(std::env::current_exe()?)
            .args([
                "--exact",
                "delivery::spool::tests::crash_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("VISION_SPOOL_CRASH_PATH", &path)
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut confirmed = 0u64;
        for line in std::io::BufReader::new(stdout).lines() {
            if let Some(n) = line?.strip_prefix("inserted ") {
                confirmed = n.trim().parse()?;
                if confirmed >= 300 {
                    break;
                }
            }
        }
        // SIGKILL: no destructor, no checkpoint, most likely in the middle of a transaction.
        child.kill()?;
        child.wait()?;
        assert!(confirmed >= 300, "the writer stopped early at {confirmed}");
        let (spool, _) = Spool::open(&path, NO_LIMITS)?;
        let rows = spool.load_after(0, 100_000)?;
        // Every committed message is there, intact, and nothing else: ids 1..=n, no gap.
        assert!(
            rows.len() as u64 >= confirmed,
            "{} < {confirmed}",
            rows.len()
        );
        for (k, row) in rows.iter().enumerate() {
            let i = k as u64 + 1;
            assert_eq!(row.id, i);
            assert_eq!(row.message.topic, format!("crash/{i}"));
            assert_eq!(row.message.payload, i.to_string().repeat(50).into_bytes());
        }
        Ok(())
    }
}
