//! The controllers: deliveries into work, routes and credentials into truthful status.

pub mod matching;
