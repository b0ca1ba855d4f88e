-- Whether kas finished sending a token to whoever created it (or the token
-- has been used, which proves it arrived). A token kas was still answering
-- for when it stopped stays undelivered; kas forgets undelivered tokens
-- after --undelivered-token-grace. Tokens from before this column were
-- delivered.
ALTER TABLE cluster_agent_tokens ADD COLUMN delivered BIGINT NOT NULL DEFAULT 1;
