-- glagent's extension: an environment may watch more namespaces than
-- GitLab's one `kubernetes_namespace` (blue/green, an app and its
-- database). Comma-separated; namespace names cannot hold a comma.
ALTER TABLE environments ADD COLUMN more_namespaces TEXT NOT NULL DEFAULT '';
