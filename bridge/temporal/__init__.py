"""The Temporal side: the client, the calls routes make, what their failures mean."""
