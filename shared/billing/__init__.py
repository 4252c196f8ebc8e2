"""Billing's common part: the meters (the contract between the metering worker, usage queries and invoices),
plans with their quotas, and invoices."""
