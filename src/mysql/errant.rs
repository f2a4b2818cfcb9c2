//! Errant GTIDs: transactions a replica executed that did not come from its
//! replication source (reference §4.4).
//!
//! MySQL (the upstream rule): take the replica's executed set, drop every
//! transaction written by a server of its ancestry chain (source, source's
//! source, ...) other than itself (a co-primary drops its own too), then drop
//! everything the reference set holds, except the reference's transactions of
//! the source UUID. What remains was written locally and never reached the
//! source.
//!
//! MariaDB (our test world; upstream VTOrc computes nothing for MariaDB). A
//! MariaDB position keeps only the last GTID per domain, and a transaction
//! written locally on a replica carries the replica's own `server_id`. So the
//! same shape is applied per domain, with `server_id` in the role of the UUID:
//!
//! 1. domains whose last GTID was written by an ancestor (not by this server)
//!    are dropped: that GTID came through replication;
//! 2. a remaining entry `d-s-n` is errant unless the reference position has
//!    domain `d` at a sequence above `n`, or at `n` written by the same server
//!    `s`. (The MySQL step "reference minus the source UUID" is skipped: a
//!    domain's last GTID stands for the whole domain, so dropping it would
//!    forget everything the source holds in that domain.)
//!
//! Same sequence with a different server is a divergence (both wrote `n`), so
//! it counts as errant. Limit: once the replica applies later transactions of
//! the domain from its source, the local write is no longer the last GTID of
//! the domain and cannot be seen in the position any more (MariaDB's
//! `gtid_binlog_state` would still show it; FullStatus does not carry it).
//! With `gtid_strict_mode` on, such a replica stops with an SQL error instead
//! and is reported as `ReplicationStopped`.

use super::position::{MariaDbGtidSet, Mysql56GtidSet, Position, PositionError, Sid};

/// How a server is identified in positions: its UUID (MySQL) and `server_id` (MariaDB).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerIdentity {
    /// `server_uuid`; empty if unknown.
    pub uuid: String,
    /// `server_id`; 0 if unknown.
    pub server_id: u32,
}

/// Everything the errant computation needs about one replica.
#[derive(Clone, Debug)]
pub struct ErrantGtidInput<'a> {
    /// The replica's executed position.
    pub executed: &'a Position,
    /// The replica itself.
    pub server: &'a ServerIdentity,
    /// Its replication ancestors, nearest first, not including itself.
    pub ancestry: &'a [ServerIdentity],
    /// Its direct source, if it replicates.
    pub source: Option<&'a ServerIdentity>,
    /// What it should contain: the source's executed position, or the shard
    /// primary's when the replica is not connected to it.
    pub reference: &'a Position,
    /// The replica's source replicates from the replica (co-primary pair).
    pub co_primary: bool,
}

/// Computes the errant GTIDs of a replica (see the module docs).
///
/// Returns [`Position::Empty`] when either position is empty (nothing to
/// compare). File positions carry no GTIDs and yield `Empty` too. Positions of
/// different GTID flavors are an error.
pub fn errant_gtids(input: &ErrantGtidInput<'_>) -> Result<Position, PositionError> {
    if input.executed.is_empty() || input.reference.is_empty() {
        return Ok(Position::Empty);
    }
    match (input.executed, input.reference) {
        (Position::MySql56(own), Position::MySql56(reference)) => {
            Ok(Position::MySql56(errant_mysql(own, reference, input)))
        }
        (Position::MariaDb(own), Position::MariaDb(reference)) => {
            Ok(Position::MariaDb(errant_mariadb(own, reference, input)))
        }
        (Position::FilePos(_), _) | (_, Position::FilePos(_)) => Ok(Position::Empty),
        (a, b) => Err(PositionError::FlavorMismatch {
            left: a.flavor(),
            right: b.flavor(),
        }),
    }
}

fn errant_mysql(
    own: &Mysql56GtidSet,
    reference: &Mysql56GtidSet,
    input: &ErrantGtidInput<'_>,
) -> Mysql56GtidSet {
    let own_sid = Sid::parse(&input.server.uuid).ok();
    let mut redacted = own.clone();
    for ancestor in input.ancestry {
        if let Ok(sid) = Sid::parse(&ancestor.uuid)
            && Some(sid) != own_sid
        {
            redacted = redacted.remove_sid(&sid);
        }
    }
    if input.co_primary
        && let Some(sid) = own_sid
    {
        redacted = redacted.remove_sid(&sid);
    }
    if redacted.is_empty() {
        return redacted;
    }
    let mut reference = reference.clone();
    if let Some(sid) = input.source.and_then(|s| Sid::parse(&s.uuid).ok()) {
        reference = reference.remove_sid(&sid);
    }
    redacted.subtract(&reference)
}

fn errant_mariadb(
    own: &MariaDbGtidSet,
    reference: &MariaDbGtidSet,
    input: &ErrantGtidInput<'_>,
) -> MariaDbGtidSet {
    let own_id = input.server.server_id;
    let mut redacted = own.clone();
    for ancestor in input.ancestry {
        if ancestor.server_id != 0 && ancestor.server_id != own_id {
            redacted = redacted.remove_server(ancestor.server_id);
        }
    }
    if input.co_primary && own_id != 0 {
        redacted = redacted.remove_server(own_id);
    }
    // Unlike MySQL, the source's entries are not removed from the reference:
    // a domain's last GTID stands for the whole domain prefix, and the
    // source's own entries were already removed from `redacted` above.
    MariaDbGtidSet::from_gtids(redacted.gtids().copied().filter(|g| {
        reference
            .get(g.domain)
            .is_none_or(|r| r.sequence < g.sequence || (r.sequence == g.sequence && r.server != g.server))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: &str = "11111111-1111-1111-1111-111111111111";
    const REPLICA: &str = "22222222-2222-2222-2222-222222222222";
    const OTHER: &str = "33333333-3333-3333-3333-333333333333";

    fn p(text: &str) -> Position {
        Position::parse(text).expect("test input parses")
    }

    fn id(uuid: &str, server_id: u32) -> ServerIdentity {
        ServerIdentity {
            uuid: uuid.to_string(),
            server_id,
        }
    }

    /// [`run`] for MariaDB replica 102 of primary 101.
    fn mariadb_replica_102_of_101(executed: &str, reference: &str) -> Position {
        run(&p(executed), &p(reference), &id("", 102), &id("", 101))
    }

    fn run(
        executed: &Position,
        reference: &Position,
        me: &ServerIdentity,
        source: &ServerIdentity,
    ) -> Position {
        let ancestry = [source.clone()];
        errant_gtids(&ErrantGtidInput {
            executed,
            server: me,
            ancestry: &ancestry,
            source: Some(source),
            reference,
            co_primary: false,
        })
        .expect("same flavor")
    }

    #[test]
    fn mysql_local_write_on_replica_is_errant() {
        let executed = p(&format!("MySQL56/{PRIMARY}:1-100,{REPLICA}:1-2"));
        let reference = p(&format!("MySQL56/{PRIMARY}:1-90"));
        let errant = run(&executed, &reference, &id(REPLICA, 2), &id(PRIMARY, 1));
        assert_eq!(errant.to_string(), format!("MySQL56/{REPLICA}:1-2"));
        assert_eq!(errant.gtid_count(), 2);
    }

    #[test]
    fn mysql_replica_ahead_of_a_stale_primary_read_is_not_errant() {
        // The replica's primary UUID transactions are never errant, even when
        // the primary's last poll is older than the replica's.
        let executed = p(&format!("MySQL56/{PRIMARY}:1-100"));
        let reference = p(&format!("MySQL56/{PRIMARY}:1-90"));
        assert!(run(&executed, &reference, &id(REPLICA, 2), &id(PRIMARY, 1)).is_empty());
    }

    #[test]
    fn mysql_transactions_of_a_third_server_known_to_the_primary_are_not_errant() {
        let executed = p(&format!("MySQL56/{PRIMARY}:1-5,{OTHER}:1-3"));
        let reference = p(&format!("MySQL56/{PRIMARY}:1-5,{OTHER}:1-3"));
        assert!(run(&executed, &reference, &id(REPLICA, 2), &id(PRIMARY, 1)).is_empty());
        let reference = p(&format!("MySQL56/{PRIMARY}:1-5,{OTHER}:1-2"));
        assert_eq!(
            run(&executed, &reference, &id(REPLICA, 2), &id(PRIMARY, 1)).to_string(),
            format!("MySQL56/{OTHER}:3")
        );
    }

    #[test]
    fn co_primary_ignores_its_own_writes() {
        let executed = p(&format!("MySQL56/{PRIMARY}:1-5,{REPLICA}:1-3"));
        let reference = p(&format!("MySQL56/{PRIMARY}:1-5"));
        let me = id(REPLICA, 2);
        let src = id(PRIMARY, 1);
        let ancestry = [src.clone()];
        let out = errant_gtids(&ErrantGtidInput {
            executed: &executed,
            server: &me,
            ancestry: &ancestry,
            source: Some(&src),
            reference: &reference,
            co_primary: true,
        });
        assert_eq!(out, Ok(Position::MySql56(Mysql56GtidSet::new())));
    }

    #[test]
    fn mariadb_local_write_ahead_of_primary_is_errant() {
        let errant = mariadb_replica_102_of_101("MariaDB/0-102-11", "MariaDB/0-101-10");
        assert_eq!(errant.to_string(), "MariaDB/0-102-11");
    }

    #[test]
    fn mariadb_same_sequence_from_another_server_is_a_divergence() {
        let errant = mariadb_replica_102_of_101("MariaDB/0-102-10", "MariaDB/0-100-10");
        assert_eq!(errant.to_string(), "MariaDB/0-102-10");
    }

    #[test]
    fn mariadb_replicated_transactions_are_not_errant() {
        // Last GTID came from the source: replicated, never errant.
        assert!(mariadb_replica_102_of_101("MariaDB/0-101-12", "MariaDB/0-101-10").is_empty());
        // Written by an old primary and known to the current one.
        assert!(mariadb_replica_102_of_101("MariaDB/0-100-8", "MariaDB/0-101-10").is_empty());
    }

    #[test]
    fn empty_or_file_positions_have_no_errant_gtids() {
        let me = id(REPLICA, 2);
        let src = id(PRIMARY, 1);
        assert!(run(&Position::Empty, &p("MariaDB/0-1-1"), &me, &src).is_empty());
        assert!(run(&p("FilePos/b.1:4"), &p("FilePos/b.1:9"), &me, &src).is_empty());
        let err = errant_gtids(&ErrantGtidInput {
            executed: &p("MariaDB/0-1-1"),
            server: &me,
            ancestry: &[],
            source: None,
            reference: &p(&format!("MySQL56/{PRIMARY}:1")),
            co_primary: false,
        });
        assert!(err.is_err());
    }
}
