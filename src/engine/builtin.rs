//! The WorkFlowEngine tasks the service runs itself.
