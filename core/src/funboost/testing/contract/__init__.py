"""``pytest --pyargs funboost.testing.contract --funboost-broker KIND`` runs the suite on KIND."""
