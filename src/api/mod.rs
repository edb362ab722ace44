//! Client-facing front ends: thin translations of wire formats into calls on
//! the node core. No business logic lives here.

pub mod base64;
pub mod grpc;
pub mod op;
pub mod rest;

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
    /// The part of etcd's v3 API that Ferrium's tools speak so far
    /// (`proto/etcd/`): `ferrium-bench` measures etcd with it.
    pub mod etcd {
        /// etcd's key-value and event messages.
        pub mod mvccpb {
            tonic::include_proto!("mvccpb");
        }
        /// etcd's `KV.Put`, `Watch` and `Lease` (grant, revoke, keep-alive).
        pub mod etcdserverpb {
            tonic::include_proto!("etcdserverpb");
        }
    }
}
