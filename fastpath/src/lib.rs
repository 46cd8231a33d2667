//! entente-fastpath: the messaging layer between agents.
