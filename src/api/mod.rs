//! Client-facing front ends: thin translations of wire formats into calls on
//! the node core. No business logic lives here.

pub mod base64;
pub mod etcd;
pub mod grpc;
pub mod op;
pub mod rest;
pub mod ui;

/// Types and service stubs generated from `proto/` at build time.
pub mod proto {
    /// `ferrium.kv`: the key-value service.
    pub mod kv {
        tonic::include_proto!("ferrium.kv");
    }
    /// `ferrium.lock`: locks and elections.
    pub mod lock {
        tonic::include_proto!("ferrium.lock");
    }
    /// `ferrium.management`: cluster management.
    pub mod management {
        tonic::include_proto!("ferrium.management");
    }
    /// `grpc.health.v1`: the standard health checking protocol.
    pub mod health {
        tonic::include_proto!("grpc.health.v1");
    }
    /// etcd's v3 API (`proto/etcd/`), served by [`super::etcd`] and spoken
    /// by `ferrium-bench --api etcd`; with the proto3 JSON mapping of every
    /// message for the gateway.
    pub mod etcd {
        /// etcd's key-value and event messages.
        pub mod mvccpb {
            tonic::include_proto!("mvccpb");
            include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
        }
        /// `KV`, `Watch`, `Lease`, `Cluster` and `Maintenance`.
        pub mod etcdserverpb {
            tonic::include_proto!("etcdserverpb");
            include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
        }
        /// `Lock`.
        pub mod v3lockpb {
            tonic::include_proto!("v3lockpb");
            include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
        }
        /// `Election`.
        pub mod v3electionpb {
            tonic::include_proto!("v3electionpb");
            include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
        }
    }
}
