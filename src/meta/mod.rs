pub mod flannel;
pub mod tuning;
