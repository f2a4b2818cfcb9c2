//! The vtorc-rs test world: real etcd and MariaDB servers, a tablet agent that
//! stands in for vttablet, and the harness that starts and tears them down.

pub mod agent;
pub mod cluster;
pub mod etcd;
pub mod faults;
pub mod fleet;
pub mod mariadb;
pub mod netfault;
pub mod pki;
pub mod process;
pub mod restore;
pub mod sim;
pub mod testkit;
pub mod topo_conformance;
pub mod vtadmin;
pub mod workload;
