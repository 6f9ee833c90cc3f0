//! The generated `sluice.v1` API (messages, client and server stubs) and its descriptor set.
#![allow(missing_docs, unreachable_pub, clippy::all)]

tonic::include_proto!("sluice.v1");

/// The encoded `FileDescriptorSet` of `proto/`, served by the reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sluice_descriptor");
