#!/usr/bin/env python3
"""Writes the signed seeds of the sns_envelope target (fuzz/corpus/sns_envelope/) and the
certificate the target serves (fuzz/fuzz_targets/sns_cert.pem), with a new throwaway RSA key
that is deleted afterwards: no private key is kept. Needs python3 and openssl. Run it again
only to change the seeds (it replaces the certificate, so every signed seed is re-signed).

    python3 fuzz/make_sns_seeds.py
"""
import base64, json, os, shutil, subprocess, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
TOPIC = "arn:aws:sns:eu-west-1:123456789012:mailroom-ses"
CERT = "http://127.0.0.1:0/cert.pem"
out = os.path.join(HERE, "corpus", "sns_envelope")
keydir = tempfile.mkdtemp()
KEY = os.path.join(keydir, "key.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", KEY,
                "-out", os.path.join(HERE, "fuzz_targets", "sns_cert.pem"), "-days", "36500",
                "-subj", "/CN=sns.fuzz.test"], check=True, capture_output=True)

def canonical(env):
    kind = env["Type"]
    fields = (["Message", "MessageId"] + (["Subject"] if "Subject" in env else []) + ["Timestamp", "TopicArn", "Type"]
              if kind == "Notification" else
              ["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"])
    return "".join(f"{k}\n{env[k]}\n" for k in fields)

def sign(text, version):
    digest = "-sha1" if version == "1" else "-sha256"
    sig = subprocess.run(["openssl", "dgst", digest, "-sign", KEY], input=text.encode(), capture_output=True, check=True).stdout
    return base64.b64encode(sig).decode()

def envelope(kind, message, version="1", **extra):
    env = {"Type": kind, "MessageId": "5f3c1f0e-6d3b-4a8e-9d5e-0c7a2b1e9f01", "TopicArn": TOPIC,
           "Message": message, "Timestamp": "2026-11-22T10:00:00.000Z", "SignatureVersion": version,
           "SigningCertURL": CERT, **extra}
    env["Signature"] = sign(canonical(env), version)
    return env

bounce = {"notificationType": "Bounce", "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
          "feedbackId": "f-1", "timestamp": "2026-11-22T10:00:00.000Z",
          "bouncedRecipients": [{"emailAddress": "a@Example.com", "diagnosticCode": "550 5.1.1"}, {"emailAddress": "b@bücher.test"}]},
          "mail": {"messageId": "ses-1", "timestamp": "2026-11-22T09:59:00.000Z", "destination": ["a@example.com", "b@bücher.test"]}}
complaint = {"eventType": "Complaint", "complaint": {"complaintFeedbackType": "abuse",
             "complainedRecipients": [{"emailAddress": "c@example.com"}]}, "mail": {"messageId": "ses-2"}}
delay = {"eventType": "DeliveryDelay", "deliveryDelay": {"delayType": "MailboxFull",
         "delayedRecipients": [{"emailAddress": "d@example.com", "diagnosticCode": "452"}]}, "mail": {"messageId": "ses-3"}}
reject = {"eventType": "Reject", "reject": {"reason": "Bad content"}, "mail": {"messageId": "ses-6", "destination": ["e@example.com"]}}
delivery = {"notificationType": "Delivery", "delivery": {"timestamp": "2026-11-22T10:00:01Z", "recipients": ["f@example.com"],
            "smtpResponse": "250 ok"}, "mail": {"messageId": "ses-7", "destination": ["f@example.com"]}}
failure = {"eventType": "RenderingFailure", "failure": {"errorMessage": "x", "templateName": "t"}, "mail": {}}

seeds = {
    "notification_bounce_v1.json": envelope("Notification", json.dumps(bounce, ensure_ascii=False), "1"),
    "notification_complaint_v2.json": envelope("Notification", json.dumps(complaint), "2", Subject="Amazon SES Email Event Notification"),
    "notification_delivery_v2.json": envelope("Notification", json.dumps(delivery), "2"),
    "subscription_confirmation.json": envelope("SubscriptionConfirmation", "You have chosen to subscribe to the topic.", "1",
        SubscribeURL="http://127.0.0.1:0/confirm?Action=ConfirmSubscription&Token=2336412f37", Token="2336412f37"),
    "unsubscribe_confirmation.json": envelope("UnsubscribeConfirmation", "You have chosen to deactivate subscription.", "2",
        SubscribeURL="http://127.0.0.1:0/confirm?Action=ConfirmSubscription&Token=99", Token="99"),
}
# SNS's own host (never fetched by the target: it checks the rule and stops before fetching).
aws = envelope("Notification", json.dumps(reject), "1")
aws["SigningCertURL"] = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
seeds["notification_aws_cert_url.json"] = aws
for name, env in seeds.items():
    with open(os.path.join(out, name), "w") as f:
        json.dump(env, f, ensure_ascii=False)
# Raw SES messages: the target also reads the whole input as one (feedback::events).
for name, m in {"ses_delay.json": delay, "ses_reject.json": reject, "ses_rendering_failure.json": failure}.items():
    with open(os.path.join(out, name), "w") as f:
        json.dump(m, f)
shutil.rmtree(keydir)
