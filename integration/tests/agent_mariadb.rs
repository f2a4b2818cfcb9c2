//! The MariaDB launcher against the real `mariadbd`: start-up time, faults
//! and restarts.

use std::time::{Duration, Instant};

use integration::mariadb::{MariaDbOptions, MariaDbServer, REPL_PASSWORD, REPL_USER};
use mysql_async::prelude::Queryable;

/// A fresh parent directory on tmpfs when available.
fn parent_dir() -> tempfile::TempDir {
    integration::process::tmpfs_temp_dir("agent-mariadb-").expect("temp dir")
}

#[tokio::test]
async fn three_servers_start_concurrently_and_answer_queries() {
    let parent = parent_dir();
    let started = Instant::now();
    let servers = MariaDbServer::start_many(
        parent.path(),
        (0..3)
            .map(|n| (format!("m{n}"), MariaDbOptions::new(100 + n)))
            .collect(),
    )
    .await
    .expect("three MariaDB servers start");
    let elapsed = started.elapsed();
    eprintln!("3 MariaDB servers up in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "3 servers took {elapsed:?}");
    for server in &servers {
        let mut conn = server.connect().await.expect("root connects over TCP");
        let (id, ro, binlog): (u32, i64, String) = conn
            .query_first("SELECT @@server_id, @@read_only, @@gtid_binlog_pos")
            .await
            .expect("query")
            .expect("one row");
        assert_eq!(id, server.server_id());
        assert_eq!(ro, 1, "servers start read-only");
        assert_eq!(binlog, "", "user set-up must not write the binlog");
        let grants: Vec<String> = conn
            .query(format!("SHOW GRANTS FOR '{REPL_USER}'@'127.0.0.1'"))
            .await
            .expect("replication user exists");
        assert!(
            grants.iter().any(|g| g.contains("REPLICATION SLAVE")),
            "{grants:?}"
        );
    }
    let _ = REPL_PASSWORD;
}

#[tokio::test]
async fn kill_pause_resume_and_restart_behave_like_signals() {
    let parent = parent_dir();
    let mut server = MariaDbServer::start(parent.path(), "m0", MariaDbOptions::new(7))
        .await
        .expect("start");
    let mut conn = server.connect().await.expect("connect");
    conn.query_drop("CREATE DATABASE d")
        .await
        .expect("write as root despite read_only");

    server.pause().expect("SIGSTOP");
    let hung = tokio::time::timeout(Duration::from_millis(500), server.connect()).await;
    assert!(hung.is_err(), "a paused server must not answer");
    server.resume().expect("SIGCONT");
    server.connect().await.expect("answers again after SIGCONT");

    let pid = server.pid().expect("running");
    server.kill().expect("kill -9");
    assert_eq!(server.pid(), None);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "killed server reaped"
    );
    assert!(
        server.connect().await.is_err(),
        "killed server refuses connections"
    );

    server.restart().await.expect("restart on the same datadir");
    let mut conn = server.connect().await.expect("connect after restart");
    let dbs: Vec<String> = conn.query("SHOW DATABASES LIKE 'd'").await.expect("query");
    assert_eq!(dbs, vec!["d".to_string()], "data survives kill -9 and restart");

    server.stop().await.expect("graceful stop");
    assert!(!server.is_running());
    assert!(
        server.log_tail(20).contains("Shutdown complete"),
        "{}",
        server.log_tail(20)
    );
}
