-- Every liveness batch updates its servers' rows (liveness.rs), none of them indexed columns, so
-- each update can stay on its row's page (a HOT update, no index entry) when the page has room.
-- Full pages sent four updates in ten to another page, with an entry in each of the table's
-- five indexes: at 100,000 agents that doubled what the batches cost the database. Pages
-- written from now on keep half their room for updates.
ALTER TABLE servers SET (fillfactor = 50);
