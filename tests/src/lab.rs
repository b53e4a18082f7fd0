//! Lab builder (being written).
