"""A bridged call: the caller side joined to its bot (`CallerMedia`), inbound and originated calls, live commands, and the relay of a transfer."""
