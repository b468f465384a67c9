pub mod tuning;
