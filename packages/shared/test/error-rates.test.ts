import { ErrorRateTracker } from '../src/resilience/error-rates';

function clock(start = 1_700_000_000_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

describe('ErrorRateTracker', () => {
  it('reports errors, total and ratio per service and category', () => {
    const c = clock();
    const tracker = new ErrorRateTracker({ now: c.now });
    tracker.recordSuccess('chat-workflow');
    tracker.recordSuccess('chat-workflow');
    tracker.recordError('chat-workflow', 'timeout');
    tracker.recordError('chat-workflow', 'rate_limit');
    tracker.recordError('vision', 'network');

    expect(tracker.snapshot()).toEqual([
      { service: 'chat-workflow', category: 'rate_limit', errors: 1, total: 4, ratio: 0.25 },
      { service: 'chat-workflow', category: 'timeout', errors: 1, total: 4, ratio: 0.25 },
      { service: 'vision', category: 'network', errors: 1, total: 1, ratio: 1 },
    ]);
  });

  it('rolls events out of the default 60 s window bucket by bucket', () => {
    const c = clock(0);
    const tracker = new ErrorRateTracker({ now: c.now });
    tracker.recordError('gateway', 'invalid_request'); // t = 0 s
    c.advance(30_000);
    tracker.recordError('gateway', 'invalid_request'); // t = 30 s
    tracker.recordSuccess('gateway');

    c.advance(29_999); // 59.999 s: the first bucket is still the window's oldest
    expect(tracker.snapshot()).toEqual([{ service: 'gateway', category: 'invalid_request', errors: 2, total: 3, ratio: 2 / 3 }]);

    c.advance(1); // 60 s: second 0 left the window
    expect(tracker.snapshot()).toEqual([{ service: 'gateway', category: 'invalid_request', errors: 1, total: 2, ratio: 0.5 }]);

    c.advance(30_000); // 90 s: everything expired
    expect(tracker.snapshot()).toEqual([]);
  });

  it('counts successes recorded after errors into the same window', () => {
    const c = clock(0);
    const tracker = new ErrorRateTracker({ now: c.now, windowMs: 10_000 });
    tracker.recordError('vision', 'provider_unavailable');
    for (let i = 0; i < 9; i++) {
      c.advance(1000);
      tracker.recordSuccess('vision');
    }
    expect(tracker.snapshot()).toEqual([{ service: 'vision', category: 'provider_unavailable', errors: 1, total: 10, ratio: 0.1 }]);
    c.advance(1000);
    expect(tracker.snapshot()).toEqual([]);
  });

  it('groups many events in one second into one bucket', () => {
    const c = clock(5_000);
    const tracker = new ErrorRateTracker({ now: c.now, windowMs: 2_000 });
    for (let i = 0; i < 100; i++) {
      tracker.recordError('cost-ledger', 'network');
      c.advance(5);
    }
    expect(tracker.snapshot()[0]).toMatchObject({ errors: 100, total: 100, ratio: 1 });
    c.advance(1500); // 7 s: the 5 s bucket has left a 2 s window
    expect(tracker.snapshot()).toEqual([]);
  });

  it('lists no row for a service with only successes', () => {
    const tracker = new ErrorRateTracker({ now: clock().now });
    tracker.recordSuccess('alerting');
    expect(tracker.snapshot()).toEqual([]);
  });
});
