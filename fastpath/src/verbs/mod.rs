//! RDMA verbs backend (in progress).
