//! The one integration-test binary (one link, one build): each module is a theme.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod apply;
mod apply_faults;
mod bad_input;
mod ci_comment;
mod cli;
mod daemon;
mod daemon_e2e;
mod daemon_git;
mod daemon_watch;
mod deploy;
mod examples;
mod foreign_writes;
mod hostile_cluster;
mod hostile_input;
mod image;
mod injection;
mod kubectl;
mod kubectl_table;
mod kubevirt_conformance;
mod kubevirt_rules;
mod monitoring;
mod plan;
mod plan_e2e;
mod plan_props;
mod proxy;
mod reach;
mod render;
mod sim;
mod sim_api;
mod sim_controllers;
mod status;
mod support;
mod terminal;
