//! `rocm-fix validate`: evidence from real RX 5000/6000 cards.
pub mod bundle;
