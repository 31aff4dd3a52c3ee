//! SDP offer/answer rewriting so that media flows through XCC's ports (shared by SIP and gRPC).
