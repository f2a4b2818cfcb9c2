//! The TabletManager client seam: one request/response enum pair, a trait with
//! one required method, and typed helpers on top.
//!
//! Implementations (gRPC in [`super::grpc`], scripted fakes in tests) only
//! implement [`TabletManager::call`]; the typed methods build the request and
//! unpack the answer. A fake therefore sees every request as a [`TmRequest`]
//! value it can match on or record, and a test can assert the exact sequence.

use std::{collections::BTreeMap, time::Duration};

use async_trait::async_trait;

use super::error::TabletError;
use crate::proto::{
    replicationdata::{
        FullStatus, PrimaryStatus, Status as ReplicationStatus, StopReplicationMode, StopReplicationStatus,
    },
    tabletmanagerdata as tm,
    topodata::{Tablet, TabletAlias, TabletType},
};

macro_rules! tablet_rpcs {
    ($($variant:ident => $method:ident($req:ident, $resp:ident);)*) => {
        /// One TabletManager request; the variant is the RPC.
        #[derive(Clone, Debug, PartialEq)]
        pub enum TmRequest {
            $(
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(tm::$req),
            )*
        }

        /// One TabletManager answer; the variant matches the request's.
        #[derive(Clone, Debug, PartialEq)]
        pub enum TmResponse {
            $(
                #[doc = concat!("`", stringify!($variant), "`.")]
                $variant(tm::$resp),
            )*
        }

        impl TmRequest {
            /// The RPC's name as Vitess spells it (`FullStatus`).
            pub fn method(&self) -> &'static str {
                match self {
                    $(TmRequest::$variant(_) => stringify!($variant),)*
                }
            }
        }

        impl TmResponse {
            /// The RPC's name as Vitess spells it (`FullStatus`).
            pub fn method(&self) -> &'static str {
                match self {
                    $(TmResponse::$variant(_) => stringify!($variant),)*
                }
            }
        }

        /// Sends `request` on `client`, with `timeout` in the `grpc-timeout` header.
        pub(crate) async fn dispatch<T>(
            client: &mut crate::proto::tabletmanagerservice::tablet_manager_client::TabletManagerClient<T>,
            request: TmRequest,
            timeout: Duration,
        ) -> Result<TmResponse, tonic::Status>
        where
            T: tonic::client::GrpcService<tonic::body::Body>,
            T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
            T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
            <T::ResponseBody as tonic::codegen::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send,
        {
            match request {
                $(
                    TmRequest::$variant(r) => {
                        let mut req = tonic::Request::new(r);
                        req.set_timeout(timeout);
                        client.$method(req).await.map(|resp| TmResponse::$variant(resp.into_inner()))
                    }
                )*
            }
        }
    };
}

tablet_rpcs! {
    Ping => ping(PingRequest, PingResponse);
    GetGlobalStatusVars => get_global_status_vars(GetGlobalStatusVarsRequest, GetGlobalStatusVarsResponse);
    SetReadOnly => set_read_only(SetReadOnlyRequest, SetReadOnlyResponse);
    SetReadWrite => set_read_write(SetReadWriteRequest, SetReadWriteResponse);
    ChangeType => change_type(ChangeTypeRequest, ChangeTypeResponse);
    RefreshState => refresh_state(RefreshStateRequest, RefreshStateResponse);
    ReplicationStatus => replication_status(ReplicationStatusRequest, ReplicationStatusResponse);
    PrimaryStatus => primary_status(PrimaryStatusRequest, PrimaryStatusResponse);
    PrimaryPosition => primary_position(PrimaryPositionRequest, PrimaryPositionResponse);
    WaitForPosition => wait_for_position(WaitForPositionRequest, WaitForPositionResponse);
    StopReplication => stop_replication(StopReplicationRequest, StopReplicationResponse);
    StopReplicationMinimum => stop_replication_minimum(StopReplicationMinimumRequest, StopReplicationMinimumResponse);
    StartReplication => start_replication(StartReplicationRequest, StartReplicationResponse);
    RestartReplication => restart_replication(RestartReplicationRequest, RestartReplicationResponse);
    ResetReplication => reset_replication(ResetReplicationRequest, ResetReplicationResponse);
    InitPrimary => init_primary(InitPrimaryRequest, InitPrimaryResponse);
    PopulateReparentJournal => populate_reparent_journal(PopulateReparentJournalRequest, PopulateReparentJournalResponse);
    ReadReparentJournalInfo => read_reparent_journal_info(ReadReparentJournalInfoRequest, ReadReparentJournalInfoResponse);
    InitReplica => init_replica(InitReplicaRequest, InitReplicaResponse);
    DemotePrimary => demote_primary(DemotePrimaryRequest, DemotePrimaryResponse);
    UndoDemotePrimary => undo_demote_primary(UndoDemotePrimaryRequest, UndoDemotePrimaryResponse);
    ReplicaWasPromoted => replica_was_promoted(ReplicaWasPromotedRequest, ReplicaWasPromotedResponse);
    ResetReplicationParameters => reset_replication_parameters(ResetReplicationParametersRequest, ResetReplicationParametersResponse);
    FullStatus => full_status(FullStatusRequest, FullStatusResponse);
    SetReplicationSource => set_replication_source(SetReplicationSourceRequest, SetReplicationSourceResponse);
    ReplicaWasRestarted => replica_was_restarted(ReplicaWasRestartedRequest, ReplicaWasRestartedResponse);
    StopReplicationAndGetStatus => stop_replication_and_get_status(StopReplicationAndGetStatusRequest, StopReplicationAndGetStatusResponse);
    PromoteReplica => promote_replica(PromoteReplicaRequest, PromoteReplicaResponse);
    RunHealthCheck => run_health_check(RunHealthCheckRequest, RunHealthCheckResponse);
}

/// The alias a tablet record names, or `cell-0` placeholder for a record
/// without one (such a record cannot be called; see [`TabletError::NoAddress`]).
pub fn alias_of(tablet: &Tablet) -> TabletAlias {
    tablet.alias.clone().unwrap_or_default()
}

/// `host:port` of a tablet's gRPC server: `hostname` and `port_map["grpc"]`
/// (IPv6 literals bracketed).
pub fn tablet_address(tablet: &Tablet) -> Result<String, TabletError> {
    let no_address = |reason: &str| TabletError::NoAddress {
        alias: alias_of(tablet),
        reason: reason.into(),
    };
    if tablet.hostname.is_empty() {
        return Err(no_address("the tablet record has no hostname"));
    }
    let port = tablet
        .port_map
        .get("grpc")
        .copied()
        .ok_or_else(|| no_address("the tablet record has no grpc port"))?;
    let port = u16::try_from(port).map_err(|_| no_address("the grpc port is out of range"))?;
    if port == 0 {
        return Err(no_address("the grpc port is 0"));
    }
    let host = &tablet.hostname;
    if host.contains(':') && !host.starts_with('[') {
        Ok(format!("[{host}]:{port}"))
    } else {
        Ok(format!("{host}:{port}"))
    }
}

/// Unpacks the expected response variant, or reports a mismatch.
macro_rules! expect_response {
    ($tablet:expr, $resp:expr, $variant:ident) => {
        match $resp {
            TmResponse::$variant(r) => r,
            other => {
                return Err(TabletError::invalid_response(
                    &alias_of($tablet),
                    stringify!($variant),
                    format!("answered with a {} response", other.method()),
                ));
            }
        }
    };
}

/// The TabletManager RPCs VTOrc, ERS and PRS send, addressed by tablet record
/// (the gRPC address is `hostname` + `port_map["grpc"]`).
///
/// Implementors provide [`call`](TabletManager::call); the typed methods are
/// built on it and are not meant to be overridden. Every call has a deadline:
/// the implementation's default (`--remote-operation-timeout`), or the one
/// given through [`TabletManagerExt::with_timeout`].
#[async_trait]
pub trait TabletManager: Send + Sync {
    /// Sends one request. `timeout`: `None` = the implementation's default
    /// deadline; `Some(d)` = exactly `d`.
    async fn call(
        &self,
        tablet: &Tablet,
        request: TmRequest,
        timeout: Option<Duration>,
    ) -> Result<TmResponse, TabletError>;

    /// Drops whatever the implementation caches for a tablet that left the
    /// topology (connections). The default does nothing.
    fn forget(&self, _alias: &TabletAlias) {}

    /// `FullStatus`: everything VTOrc's poll reads.
    async fn full_status(&self, tablet: &Tablet) -> Result<FullStatus, TabletError> {
        let resp = self
            .call(tablet, TmRequest::FullStatus(tm::FullStatusRequest {}), None)
            .await?;
        let resp = expect_response!(tablet, resp, FullStatus);
        resp.status.ok_or_else(|| {
            TabletError::invalid_response(&alias_of(tablet), "FullStatus", "no status in the answer")
        })
    }

    /// `Ping`: is the tablet process alive (the payload must come back).
    async fn ping(&self, tablet: &Tablet) -> Result<(), TabletError> {
        let payload = "vtorc".to_string();
        let resp = self
            .call(
                tablet,
                TmRequest::Ping(tm::PingRequest {
                    payload: payload.clone(),
                }),
                None,
            )
            .await?;
        let resp = expect_response!(tablet, resp, Ping);
        if resp.payload != payload {
            return Err(TabletError::invalid_response(
                &alias_of(tablet),
                "Ping",
                format!("payload {:?} does not echo {payload:?}", resp.payload),
            ));
        }
        Ok(())
    }

    /// `RunHealthCheck`: the tablet runs its health check now and sends the
    /// result on every open `StreamHealth` stream (vttablet broadcasts its
    /// current state with replication health refreshed, e.g. heartbeat lag).
    async fn run_health_check(&self, tablet: &Tablet) -> Result<(), TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::RunHealthCheck(tm::RunHealthCheckRequest {}),
                None,
            )
            .await?;
        expect_response!(tablet, resp, RunHealthCheck);
        Ok(())
    }

    /// `ReplicationStatus`: the replica's replication state.
    async fn replication_status(&self, tablet: &Tablet) -> Result<ReplicationStatus, TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::ReplicationStatus(tm::ReplicationStatusRequest {}),
                None,
            )
            .await?;
        let resp = expect_response!(tablet, resp, ReplicationStatus);
        resp.status.ok_or_else(|| {
            TabletError::invalid_response(&alias_of(tablet), "ReplicationStatus", "no status in the answer")
        })
    }

    /// `PrimaryStatus`: the primary's position and server UUID.
    async fn primary_status(&self, tablet: &Tablet) -> Result<PrimaryStatus, TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::PrimaryStatus(tm::PrimaryStatusRequest {}),
                None,
            )
            .await?;
        let resp = expect_response!(tablet, resp, PrimaryStatus);
        resp.status.ok_or_else(|| {
            TabletError::invalid_response(&alias_of(tablet), "PrimaryStatus", "no status in the answer")
        })
    }

    /// `PrimaryPosition`: the executed position, in Vitess's text form.
    async fn primary_position(&self, tablet: &Tablet) -> Result<String, TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::PrimaryPosition(tm::PrimaryPositionRequest {}),
                None,
            )
            .await?;
        Ok(expect_response!(tablet, resp, PrimaryPosition).position)
    }

    /// `WaitForPosition`: returns once the tablet has applied `position`.
    async fn wait_for_position(&self, tablet: &Tablet, position: &str) -> Result<(), TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::WaitForPosition(tm::WaitForPositionRequest {
                    position: position.to_string(),
                }),
                None,
            )
            .await?;
        expect_response!(tablet, resp, WaitForPosition);
        Ok(())
    }

    /// `StopReplication`: stops both replication threads.
    async fn stop_replication(&self, tablet: &Tablet) -> Result<(), TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::StopReplication(tm::StopReplicationRequest {}),
                None,
            )
            .await?;
        expect_response!(tablet, resp, StopReplication);
        Ok(())
    }

    /// `StopReplicationAndGetStatus`: stops replication (`mode`) and returns
    /// the status before and after.
    async fn stop_replication_and_get_status(
        &self,
        tablet: &Tablet,
        mode: StopReplicationMode,
    ) -> Result<StopReplicationStatus, TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::StopReplicationAndGetStatus(tm::StopReplicationAndGetStatusRequest {
                    stop_replication_mode: mode as i32,
                }),
                None,
            )
            .await?;
        let resp = expect_response!(tablet, resp, StopReplicationAndGetStatus);
        resp.status.ok_or_else(|| {
            TabletError::invalid_response(
                &alias_of(tablet),
                "StopReplicationAndGetStatus",
                "no status in the answer",
            )
        })
    }

    /// `StartReplication`.
    async fn start_replication(&self, tablet: &Tablet, semi_sync: bool) -> Result<(), TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::StartReplication(tm::StartReplicationRequest { semi_sync }),
                None,
            )
            .await?;
        expect_response!(tablet, resp, StartReplication);
        Ok(())
    }

    /// `RestartReplication`: stop, then start, the replication threads.
    async fn restart_replication(&self, tablet: &Tablet, semi_sync: bool) -> Result<(), TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::RestartReplication(tm::RestartReplicationRequest { semi_sync }),
                None,
            )
            .await?;
        expect_response!(tablet, resp, RestartReplication);
        Ok(())
    }

    /// `SetReplicationSource`: point replication at `request.parent`.
    async fn set_replication_source(
        &self,
        tablet: &Tablet,
        request: tm::SetReplicationSourceRequest,
    ) -> Result<(), TabletError> {
        let resp = self
            .call(tablet, TmRequest::SetReplicationSource(request), None)
            .await?;
        expect_response!(tablet, resp, SetReplicationSource);
        Ok(())
    }

    /// `ResetReplicationParameters`: remove the replication configuration.
    async fn reset_replication_parameters(&self, tablet: &Tablet) -> Result<(), TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::ResetReplicationParameters(tm::ResetReplicationParametersRequest {}),
                None,
            )
            .await?;
        expect_response!(tablet, resp, ResetReplicationParameters);
        Ok(())
    }

    /// `SetReadOnly`.
    async fn set_read_only(&self, tablet: &Tablet) -> Result<(), TabletError> {
        let resp = self
            .call(tablet, TmRequest::SetReadOnly(tm::SetReadOnlyRequest {}), None)
            .await?;
        expect_response!(tablet, resp, SetReadOnly);
        Ok(())
    }

    /// `SetReadWrite`.
    async fn set_read_write(&self, tablet: &Tablet) -> Result<(), TabletError> {
        let resp = self
            .call(tablet, TmRequest::SetReadWrite(tm::SetReadWriteRequest {}), None)
            .await?;
        expect_response!(tablet, resp, SetReadWrite);
        Ok(())
    }

    /// `ChangeType`: change the tablet's type (e.g. to DRAINED).
    async fn change_type(
        &self,
        tablet: &Tablet,
        tablet_type: TabletType,
        semi_sync: bool,
    ) -> Result<(), TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::ChangeType(tm::ChangeTypeRequest {
                    tablet_type: tablet_type as i32,
                    semi_sync,
                }),
                None,
            )
            .await?;
        expect_response!(tablet, resp, ChangeType);
        Ok(())
    }

    /// `RefreshState`: make the tablet re-read its topo record.
    async fn refresh_state(&self, tablet: &Tablet) -> Result<(), TabletError> {
        let resp = self
            .call(tablet, TmRequest::RefreshState(tm::RefreshStateRequest {}), None)
            .await?;
        expect_response!(tablet, resp, RefreshState);
        Ok(())
    }

    /// `DemotePrimary`: read-only and demoted; returns the primary status at
    /// the moment of demotion.
    async fn demote_primary(&self, tablet: &Tablet, force: bool) -> Result<PrimaryStatus, TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::DemotePrimary(tm::DemotePrimaryRequest { force }),
                None,
            )
            .await?;
        let resp = expect_response!(tablet, resp, DemotePrimary);
        resp.primary_status.ok_or_else(|| {
            TabletError::invalid_response(
                &alias_of(tablet),
                "DemotePrimary",
                "no primary status in the answer",
            )
        })
    }

    /// `UndoDemotePrimary`: make a demoted primary writable again.
    async fn undo_demote_primary(&self, tablet: &Tablet, semi_sync: bool) -> Result<(), TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::UndoDemotePrimary(tm::UndoDemotePrimaryRequest { semi_sync }),
                None,
            )
            .await?;
        expect_response!(tablet, resp, UndoDemotePrimary);
        Ok(())
    }

    /// `PromoteReplica`: make the tablet PRIMARY; returns its position.
    async fn promote_replica(&self, tablet: &Tablet, semi_sync: bool) -> Result<String, TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::PromoteReplica(tm::PromoteReplicaRequest { semi_sync }),
                None,
            )
            .await?;
        Ok(expect_response!(tablet, resp, PromoteReplica).position)
    }

    /// `InitPrimary`: make a tablet of a shard that never had a primary the
    /// primary; returns its position.
    async fn init_primary(&self, tablet: &Tablet, semi_sync: bool) -> Result<String, TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::InitPrimary(tm::InitPrimaryRequest { semi_sync }),
                None,
            )
            .await?;
        Ok(expect_response!(tablet, resp, InitPrimary).position)
    }

    /// `PopulateReparentJournal`: write a reparent-journal row on the new primary.
    async fn populate_reparent_journal(
        &self,
        tablet: &Tablet,
        request: tm::PopulateReparentJournalRequest,
    ) -> Result<(), TabletError> {
        let resp = self
            .call(tablet, TmRequest::PopulateReparentJournal(request), None)
            .await?;
        expect_response!(tablet, resp, PopulateReparentJournal);
        Ok(())
    }

    /// `ReadReparentJournalInfo`: the number of reparent-journal rows.
    async fn read_reparent_journal_info(&self, tablet: &Tablet) -> Result<i32, TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::ReadReparentJournalInfo(tm::ReadReparentJournalInfoRequest {}),
                None,
            )
            .await?;
        Ok(expect_response!(tablet, resp, ReadReparentJournalInfo).length)
    }

    /// `GetGlobalStatusVars`: the named `SHOW GLOBAL STATUS` values (all when empty).
    async fn get_global_status_vars(
        &self,
        tablet: &Tablet,
        variables: &[String],
    ) -> Result<BTreeMap<String, String>, TabletError> {
        let resp = self
            .call(
                tablet,
                TmRequest::GetGlobalStatusVars(tm::GetGlobalStatusVarsRequest {
                    variables: variables.to_vec(),
                }),
                None,
            )
            .await?;
        Ok(expect_response!(tablet, resp, GetGlobalStatusVars).status_values)
    }
}

/// A [`TabletManager`] whose calls all use one deadline; see
/// [`TabletManagerExt::with_timeout`].
pub struct WithTimeout<'a, T: ?Sized> {
    /// The client the calls go to.
    inner: &'a T,
    /// The deadline of every call made through this wrapper.
    timeout: Duration,
}

#[async_trait]
impl<T: TabletManager + ?Sized> TabletManager for WithTimeout<'_, T> {
    async fn call(
        &self,
        tablet: &Tablet,
        request: TmRequest,
        timeout: Option<Duration>,
    ) -> Result<TmResponse, TabletError> {
        self.inner
            .call(tablet, request, Some(timeout.unwrap_or(self.timeout)))
            .await
    }

    fn forget(&self, alias: &TabletAlias) {
        self.inner.forget(alias);
    }
}

/// Per-call deadline override for any [`TabletManager`], trait objects included.
pub trait TabletManagerExt: TabletManager {
    /// The same client with `timeout` as the deadline of its calls, e.g.
    /// `tmc.with_timeout(wait_replicas_timeout).wait_for_position(&t, &pos)`.
    fn with_timeout(&self, timeout: Duration) -> WithTimeout<'_, Self> {
        WithTimeout { inner: self, timeout }
    }
}

impl<T: TabletManager + ?Sized> TabletManagerExt for T {}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records requests and deadlines; answers from a script.
    struct Recorder {
        /// Every call seen: method and deadline override.
        seen: Mutex<Vec<(&'static str, Option<Duration>)>>,
        /// The answer to give to every call.
        answer: TmResponse,
    }

    #[async_trait]
    impl TabletManager for Recorder {
        async fn call(
            &self,
            _tablet: &Tablet,
            request: TmRequest,
            timeout: Option<Duration>,
        ) -> Result<TmResponse, TabletError> {
            self.seen
                .lock()
                .expect("test mutex is never poisoned")
                .push((request.method(), timeout));
            Ok(self.answer.clone())
        }
    }

    fn tablet() -> Tablet {
        Tablet {
            alias: Some(TabletAlias::new("zone1", 1)),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn typed_methods_unpack_the_matching_answer() {
        let r = Recorder {
            seen: Mutex::default(),
            answer: TmResponse::PrimaryPosition(tm::PrimaryPositionResponse {
                position: "MySQL56/a:1-5".into(),
            }),
        };
        assert_eq!(
            r.primary_position(&tablet()).await.expect("answered"),
            "MySQL56/a:1-5"
        );
        assert_eq!(
            r.seen.lock().expect("test mutex").as_slice(),
            &[("PrimaryPosition", None)]
        );
    }

    #[tokio::test]
    async fn a_mismatched_answer_is_an_invalid_response() {
        let r = Recorder {
            seen: Mutex::default(),
            answer: TmResponse::SetReadOnly(tm::SetReadOnlyResponse {}),
        };
        let err = r.full_status(&tablet()).await.expect_err("mismatch");
        assert!(
            matches!(
                err,
                TabletError::InvalidResponse {
                    method: "FullStatus",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_full_status_answer_without_status_is_invalid() {
        let r = Recorder {
            seen: Mutex::default(),
            answer: TmResponse::FullStatus(tm::FullStatusResponse { status: None }),
        };
        assert!(matches!(
            r.full_status(&tablet()).await,
            Err(TabletError::InvalidResponse { .. })
        ));
    }

    #[tokio::test]
    async fn with_timeout_overrides_the_deadline_even_through_a_trait_object() {
        let r = Recorder {
            seen: Mutex::default(),
            answer: TmResponse::WaitForPosition(tm::WaitForPositionResponse {}),
        };
        let dynamic: &dyn TabletManager = &r;
        dynamic
            .with_timeout(Duration::from_secs(30))
            .wait_for_position(&tablet(), "MySQL56/a:1-9")
            .await
            .expect("answered");
        assert_eq!(
            r.seen.lock().expect("test mutex").as_slice(),
            &[("WaitForPosition", Some(Duration::from_secs(30)))]
        );
    }

    #[tokio::test]
    async fn ping_checks_the_echoed_payload() {
        let r = Recorder {
            seen: Mutex::default(),
            answer: TmResponse::Ping(tm::PingResponse {
                payload: "other".into(),
            }),
        };
        assert!(matches!(
            r.ping(&tablet()).await,
            Err(TabletError::InvalidResponse { method: "Ping", .. })
        ));
    }
}
