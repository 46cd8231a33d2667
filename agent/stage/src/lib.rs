//! entente-stage: signed manifests and the content-addressed image store.
