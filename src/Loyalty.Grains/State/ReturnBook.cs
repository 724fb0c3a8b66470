using System.Collections.ObjectModel;

namespace Loyalty.Grains;

/// <summary>
/// What was returned of the member's most recently returned purchases (at most
/// <see cref="ReturnsKept"/> of them, holding at most <see cref="ReturnLinesKept"/> lines and
/// components between them), by transaction id. The rest is read from the ledger when one of
/// them is returned again or looked up, and kept again only when a return of it is applied (see
/// <see cref="Record"/>), so the book stays bounded however many purchases come back, and however
/// large. Changed only through <see cref="MemberState.Apply"/>: a return that is refused leaves it as it was.
/// </summary>
[GenerateSerializer]
public sealed class ReturnBook
{
    /// <summary>
    /// The book of a member with no return kept, shared by all of them and read-only;
    /// <see cref="MemberState"/> makes a member its own book at its first return.
    /// </summary>
    public static ReturnBook None { get; } = new(shared: true);

    [NonSerialized]
    private readonly bool _shared;

    /// <summary>Creates an empty book of the member's own.</summary>
    public ReturnBook()
    {
    }

    private ReturnBook(bool shared) => _shared = shared;

    /// <summary>
    /// How many purchases' return progress a member keeps in memory. A return whose purchase's
    /// returns were read from the ledger while another return of it was applied and then forgotten
    /// reads them again (<see cref="ChangedSince"/>; the read is noted with nothing in flight), so
    /// the bound need not cover a commit group.
    /// </summary>
    public const int ReturnsKept = 256;

    /// <summary>
    /// How many SKUs and earn components the kept progresses may hold between them (a SKU costs up
    /// to two dictionary entries and its string, up to about 200 bytes): about four purchases of
    /// <see cref="Limits.LineItemsMax"/> lines returned line by line fill it. Without it, 256 such
    /// purchases would keep about 25 MB in one member.
    /// </summary>
    public const int ReturnLinesKept = 2_048;

    /// <summary>
    /// The latest sequence at which a progress now forgotten had been used (0 when none was
    /// forgotten since the member was loaded); not kept in snapshots, since a member read back
    /// from one is another state, which every earlier read already counts as stale.
    /// </summary>
    [NonSerialized]
    private long _forgottenTouchedMax;

    [Id(0)] private Dictionary<string, ReturnProgress>? _progress;

    /// <summary>
    /// Whether <paramref name="purchaseId"/>'s returns read from the ledger when the member was at
    /// <paramref name="sequence"/> may miss a return applied since: its kept progress was used
    /// after that, or some progress used after that has been forgotten since (the book can no
    /// longer tell whose it was).
    /// </summary>
    public bool ChangedSince(string purchaseId, long sequence) =>
        (_progress?.GetValueOrDefault(purchaseId) is { } kept && kept.Touched > sequence) || _forgottenTouchedMax > sequence;

    /// <summary>
    /// The SKUs and earn components the kept progresses hold between them (see
    /// <see cref="ReturnLinesKept"/>): counted once after a load, then kept up by every change
    /// (the invariants ask for it after every entry applied).
    /// </summary>
    public int LinesKept
    {
        get
        {
            if (!_linesCounted)
            {
                _lines = 0;
                if (_progress is { } progress)
                {
                    foreach (ReturnProgress kept in progress.Values)
                    {
                        _lines += kept.Lines;
                    }
                }

                _linesCounted = true;
            }

            return _lines;
        }
    }

    [NonSerialized]
    private int _lines;

    [NonSerialized]
    private bool _linesCounted;

    /// <summary>
    /// Counts a progress's lines changing from <paramref name="before"/> to <paramref name="after"/>
    /// (once counted: else the next read counts them all, the change included).
    /// </summary>
    private void Recount(int before, int after)
    {
        if (_linesCounted)
        {
            _lines = checked(_lines - before + after);
        }
    }

    /// <summary>The progress kept, by purchase.</summary>
    public IReadOnlyDictionary<string, ReturnProgress> Kept => (IReadOnlyDictionary<string, ReturnProgress>?)_progress ?? ReadOnlyDictionary<string, ReturnProgress>.Empty;

    /// <summary>
    /// The progress of <paramref name="purchaseId"/> when it is known to be complete; null when it
    /// has no returns kept or may lack forgotten ones (then read the purchase's returns from the ledger).
    /// </summary>
    public ReturnProgress? Known(string purchaseId) =>
        _progress?.GetValueOrDefault(purchaseId) is { Complete: true } known ? known : null;

    /// <summary>
    /// Adds a return of <paramref name="purchaseId"/> applied as entry <paramref name="sequence"/>.
    /// When the book keeps nothing of the purchase, or only a progress that may lack forgotten
    /// returns, the return is added to <paramref name="seed"/>: the purchase's progress the live
    /// return was decided on, made from the ledger's earlier returns (complete), or null in
    /// replay, which begins an incomplete progress (older returns may have been forgotten).
    /// </summary>
    public void Record(string purchaseId, ReturnDetails details, long sequence, ReturnProgress? seed = null)
    {
        Writable();
        Dictionary<string, ReturnProgress> progress = _progress ??= new(StringComparer.Ordinal);
        ReturnProgress? kept = progress.GetValueOrDefault(purchaseId);
        int before = kept?.Lines ?? 0;
        if (kept is null || (seed is not null && !kept.Complete))
        {
            // A kept progress that may lack forgotten returns gives way to the complete one the
            // return was decided on: else every later return would read the ledger again, and
            // one read while this return commits would not see it.
            kept = seed ?? new ReturnProgress(details.Components.Count);
            progress[purchaseId] = kept;
        }

        kept.Touch(sequence);
        kept.Add(details);
        Recount(before, kept.Lines);
        ForgetOldest();
    }

    /// <summary>
    /// Takes over the progress a merged-away duplicate kept, as incomplete: the duplicate may have
    /// forgotten older returns, so the ledger is asked again before one of them is returned.
    /// </summary>
    public void Adopt(IReadOnlyList<ReturnedSoFar> returns, long sequence)
    {
        Writable();
        foreach (ReturnedSoFar r in returns)
        {
            Dictionary<string, ReturnProgress> progress = _progress ??= new(StringComparer.Ordinal);
            var adopted = ReturnProgress.Adopted(r, sequence);
            Recount(progress.GetValueOrDefault(r.TransactionId)?.Lines ?? 0, adopted.Lines);
            progress[r.TransactionId] = adopted;
        }

        ForgetOldest();
    }

    /// <summary>What a merge hands on of this book.</summary>
    public IReadOnlyList<ReturnedSoFar> Transfer() => [.. Kept.Select(r => r.Value.Transfer(r.Key))];

    /// <summary>
    /// Keeps at most <see cref="ReturnsKept"/> progresses and <see cref="ReturnLinesKept"/> lines
    /// (a snapshot of an older version may hold more).
    /// </summary>
    public void Trim() => ForgetOldest();

    /// <summary>
    /// Throws when more than <see cref="ReturnsKept"/> progresses are kept, or more than
    /// <see cref="ReturnLinesKept"/> lines by more than one progress.
    /// </summary>
    public void AssertInvariants(long sequence)
    {
        if (Kept.Count > ReturnsKept)
        {
            throw new InvalidOperationException($"After entry {sequence}: {Kept.Count} purchases' return progress kept, more than {ReturnsKept}.");
        }

        if (Kept.Count > 1 && LinesKept > ReturnLinesKept)
        {
            throw new InvalidOperationException($"After entry {sequence}: {LinesKept} lines of return progress kept, more than {ReturnLinesKept}.");
        }
    }

    /// <summary>
    /// Forgets the least recently used progress while more than <see cref="ReturnsKept"/> are
    /// kept, or more than <see cref="ReturnLinesKept"/> lines; the most recently used one is kept
    /// whatever its size (a purchase's lines are bounded by <see cref="Limits.LineItemsMax"/>).
    /// </summary>
    private void ForgetOldest()
    {
        if (_progress is not { } progress)
        {
            return;
        }

        while (progress.Count > ReturnsKept || (progress.Count > 1 && LinesKept > ReturnLinesKept))
        {
            (string oldest, ReturnProgress forgotten) = progress.MinBy(r => r.Value.Touched);
            progress.Remove(oldest);
            Recount(forgotten.Lines, 0);
            _forgottenTouchedMax = Math.Max(_forgottenTouchedMax, forgotten.Touched);
        }
    }

    private void Writable()
    {
        if (_shared)
        {
            throw new InvalidOperationException("The shared empty return book cannot change: the member makes its own first.");
        }
    }
}
