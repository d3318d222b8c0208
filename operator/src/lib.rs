//! flashsale-operator: reconciles `FlashSale` resources into a running booking system
//! (stores, booking-app, worker) sized for the sale's target request rate.

pub mod autoscale;
pub mod calibration;
pub mod capacity;
pub mod context;
pub mod contract;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod duration;
pub mod error;
pub mod fixtures;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod reconcile;
pub mod sale_metrics;
pub mod schedule;
pub mod server;
pub mod triggers;
