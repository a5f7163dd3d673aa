//! kpbuild's BuildKit frontend: a typed LLB builder ([`llb`]), the [`bridge`] to BuildKit (the
//! gRPC [`gateway`] over stdio implements it), the frontend's [`options`] and [`context`], the
//! lowering of a module plan into LLB ([`lower`] shared, [`kinds`] one file per module kind),
//! and the flow that ties them ([`run`]).

pub mod bridge;
pub mod context;
pub mod gateway;
pub mod kinds;
pub mod llb;
pub mod lower;
pub mod options;
pub mod run;
