//! Pure detection: from a [`crate::model::ClusterSnapshot`] to the problems VTOrc repairs.

pub mod durability;
