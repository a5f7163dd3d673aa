//! kpbuild's BuildKit frontend: a typed LLB builder ([`llb`]), the [`bridge`] to BuildKit (the
//! gRPC [`gateway`] over stdio implements it) and what it asks of BuildKit ([`caps`]), the frontend's [`options`] and [`context`], the
//! lowering of a module plan into LLB ([`lower`] shared, [`kinds`] one file per module kind),
//! and the flow that ties them ([`run`]).

pub mod bridge;
pub mod caps;
pub mod context;
pub mod gateway;
pub mod kinds;
pub mod llb;
pub mod lower;
pub mod options;
pub mod pace;
pub mod run;
