//! XCC control plane: the `xcc.v1` gRPC API, health and reflection.
