//! XCC signalling: SIP transport, RFC 3261 transactions and dialogs, back-to-back user agent.
