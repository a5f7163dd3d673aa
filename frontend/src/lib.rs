//! kpbuild's BuildKit frontend: a typed LLB builder ([`llb`]), the gateway client over stdio,
//! and the lowering of a module plan into LLB.

pub mod gateway;
pub mod llb;
pub mod lower;
pub mod run;
