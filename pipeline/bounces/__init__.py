"""The list looks after itself: bounces, complaints and mailto unsubscribes, from every way they arrive,
turned into one decision each (``policy.record_bounce``)."""
