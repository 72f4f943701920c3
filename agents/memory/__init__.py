"""The five memory agents: core, episodic, semantic, procedural and working."""
