//! The shard lock around reparents on the real world: concurrent PRS and
//! ERS on one shard run one after the other, a third party holding the
//! lock the way vtctld does blocks us, and the vtctld API maps refusals to
//! the right gRPC codes.

mod reparent_support;

use std::time::{Duration, SystemTime};

use integration::cluster::GLOBAL_ROOT;
use integration::testkit::semi_sync_commerce;
use reparent_support::{Server, ThirdPartyLock, alias, prs, reparenter, topo_type, wait_replicating_from};
use tokio::time::Instant;
use vtorc::proto::topodata::TabletType;
use vtorc::proto::vtctldata::{
    EmergencyReparentShardRequest, GetTabletsRequest, PlannedReparentShardRequest,
};
use vtorc::proto::vtctlservice::vtctld_client::VtctldClient;
use vtorc::reparent::{
    EmergencyReparentOptions, EventLog, PlannedReparentOptions, ReparentConfig, ReparentError, Reparenter,
    system_wall_clock,
};
use vtorc::topo::{LockOptions, Topo, TopoOptions};

/// When a reparent held the lock: from its first event after taking it to
/// its event just before releasing it.
fn lock_window(log: &EventLog) -> (SystemTime, SystemTime) {
    let events = log.events();
    let start = events
        .iter()
        .find(|e| e.message.starts_with("locked shard"))
        .unwrap_or_else(|| panic!("no lock event: {:#?}", log.messages()))
        .time;
    let end = events
        .iter()
        .find(|e| e.message.starts_with("releasing the shard lock"))
        .unwrap_or_else(|| panic!("no release event: {:#?}", log.messages()))
        .time;
    (start, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_prs_and_ers_on_one_shard_are_serialized_by_the_shard_lock() {
    let cluster = semi_sync_commerce().await;
    let rp = reparenter(&cluster, Duration::from_secs(15));
    let (prs_log, ers_log) = (EventLog::default(), EventLog::default());
    let prs_opts = PlannedReparentOptions::promote(alias("zone1", 101));
    let ers_opts = EmergencyReparentOptions::default();
    let (prs, ers) = tokio::join!(
        rp.planned_reparent_shard("commerce", "0", &prs_opts, None, &prs_log),
        rp.emergency_reparent_shard("commerce", "0", &ers_opts, None, &ers_log),
    );
    prs.unwrap_or_else(|e| panic!("PRS: {e}\n{:#?}", prs_log.messages()));
    let ers = ers.unwrap_or_else(|e| panic!("ERS: {e}\n{:#?}", ers_log.messages()));
    let (a, b) = (lock_window(&prs_log), lock_window(&ers_log));
    assert!(
        a.1 <= b.0 || b.1 <= a.0,
        "PRS held the lock {a:?} while ERS held it {b:?}"
    );
    // Whatever the order, the shard ends with one primary that every other
    // tablet follows.
    let winner = if a.1 <= b.0 {
        ers.new_primary.and_then(|t| t.alias).expect("ERS promoted")
    } else {
        alias("zone1", 101)
    };
    cluster
        .wait_for_primary("commerce", "0", &winner, Duration::from_secs(15))
        .await
        .expect("shard record");
    let mut primaries = 0;
    for t in cluster.shard_tablets("commerce", "0") {
        if topo_type(&cluster, t.alias()).await == TabletType::Primary {
            primaries += 1;
        } else {
            wait_replicating_from(&cluster, t.alias(), &winner).await;
        }
    }
    assert_eq!(primaries, 1, "exactly one primary");
    eprintln!(
        "serialized: PRS held the lock {:?}, ERS {:?}; final primary {winner}",
        a.1.duration_since(a.0).unwrap_or_default(),
        b.1.duration_since(b.0).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_holding_the_shard_lock_blocks_our_reparent() {
    let cluster = semi_sync_commerce().await;
    let theirs = ThirdPartyLock::take(&cluster, "commerce", "0").await;

    // With a short --lock-timeout the reparent gives up without touching a tablet.
    let short = Topo::connect_etcd(
        &cluster.topo_address(),
        GLOBAL_ROOT,
        TopoOptions {
            lock: LockOptions {
                lock_timeout: Duration::from_secs(2),
                ..LockOptions::default()
            },
            ..TopoOptions::default()
        },
    )
    .await
    .expect("topo");
    let impatient = Reparenter::new(
        short,
        reparent_support::tablet_client(),
        ReparentConfig {
            remote_operation_timeout: Duration::from_secs(10),
            wait_replicas_timeout: Duration::from_secs(10),
            clock: system_wall_clock,
        },
    );
    let started = Instant::now();
    let err = prs(&impatient, &PlannedReparentOptions::promote(alias("zone1", 101)))
        .await
        .expect_err("the shard is locked");
    assert!(matches!(err, ReparentError::Lock { .. }), "{err:?}");
    assert_eq!(err.grpc_code(), tonic::Code::DeadlineExceeded);
    assert!(err.is_retryable());
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(
        topo_type(&cluster, &alias("zone1", 100)).await,
        TabletType::Primary
    );

    // With the default timeout it waits, and proceeds once the holder lets go.
    let rp = reparenter(&cluster, Duration::from_secs(15));
    let log = EventLog::default();
    let opts = PlannedReparentOptions::promote(alias("zone1", 101));
    let prs = rp.planned_reparent_shard("commerce", "0", &opts, None, &log);
    let release = async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            !log.messages().iter().any(|m| m.starts_with("locked shard")),
            "we took a lock the third party holds: {:#?}",
            log.messages()
        );
        assert_eq!(
            topo_type(&cluster, &alias("zone1", 100)).await,
            TabletType::Primary
        );
        theirs.release().await;
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(prs, release);
    result.unwrap_or_else(|e| panic!("PRS after the release: {e}\n{:#?}", log.messages()));
    assert!(started.elapsed() >= Duration::from_millis(1500));
    cluster
        .wait_for_primary("commerce", "0", &alias("zone1", 101), Duration::from_secs(15))
        .await
        .expect("shard record");
}

/// Fails the test unless `status` has `code` and its message contains `says`.
fn refused_with(status: &tonic::Status, code: tonic::Code, says: &str) {
    assert_eq!(status.code(), code, "{status:?}");
    assert!(status.message().contains(says), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_vtctld_api_validates_and_maps_refusals_to_grpc_codes() {
    let cluster = semi_sync_commerce().await;
    let server = Server::start(&cluster, Duration::from_secs(10)).await;
    let mut client = VtctldClient::connect(format!("http://{}", server.address))
        .await
        .expect("connect");
    // expected_primary mismatch: FAILED_PRECONDITION, nothing changes.
    let status = client
        .emergency_reparent_shard(EmergencyReparentShardRequest {
            keyspace: "commerce".into(),
            shard: "0".into(),
            expected_primary: Some(alias("zone1", 102)),
            ..Default::default()
        })
        .await
        .expect_err("mismatch");
    refused_with(
        &status,
        tonic::Code::FailedPrecondition,
        "is not equal to expected alias zone1-0000000102",
    );
    // Refused PRS requests: (request, what it is, code, part of the message).
    let commerce = |shard: &str| PlannedReparentShardRequest {
        keyspace: "commerce".into(),
        shard: shard.into(),
        ..Default::default()
    };
    let refused = [
        (
            PlannedReparentShardRequest {
                new_primary: Some(alias("zone1", 101)),
                expected_primary: Some(alias("zone1", 102)),
                ..commerce("0")
            },
            "mismatch",
            tonic::Code::FailedPrecondition,
            "",
        ),
        // Missing fields are INVALID_ARGUMENT naming the field.
        (commerce(""), "no shard", tonic::Code::InvalidArgument, "shard"),
        // A shard that does not exist cannot be locked: NOT_FOUND.
        (commerce("-80"), "no such shard", tonic::Code::NotFound, ""),
    ];
    for (request, what, code, says) in refused {
        let status = client.planned_reparent_shard(request).await.expect_err(what);
        refused_with(&status, code, says);
    }
    let status = client
        .get_tablets(GetTabletsRequest {
            shard: "0".into(),
            ..Default::default()
        })
        .await
        .expect_err("shard without keyspace");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        topo_type(&cluster, &alias("zone1", 100)).await,
        TabletType::Primary
    );
    // A successful PRS through the API returns the promoted primary and the step log.
    let resp = client
        .planned_reparent_shard(PlannedReparentShardRequest {
            keyspace: "commerce".into(),
            shard: "0".into(),
            new_primary: Some(alias("zone1", 102)),
            expected_primary: Some(alias("zone1", 100)),
            ..Default::default()
        })
        .await
        .expect("PRS")
        .into_inner();
    assert_eq!(resp.promoted_primary, Some(alias("zone1", 102)));
    assert_eq!((resp.keyspace.as_str(), resp.shard.as_str()), ("commerce", "0"));
    assert!(
        resp.events
            .iter()
            .any(|e| e.value.contains("finished PlannedReparentShard")),
        "{:#?}",
        resp.events
    );
    assert!(resp.events.iter().all(|e| e.time.is_some() && !e.file.is_empty()));
    server.stop().await;
}
