-- Secrets never stay in clear: the log SMS wrote generated passwords and
-- login codes into sms_log before it redacted them. Redact those rows
-- (the messages went to the phones; nothing else reads them).
UPDATE sms_log SET params = '{"password":"******"}' WHERE template = 'account_created';
UPDATE sms_log SET params = '{"code":"******"}' WHERE template = 'login_code';
