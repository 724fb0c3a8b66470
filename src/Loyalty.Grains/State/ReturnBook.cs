using System.Collections.ObjectModel;

namespace Loyalty.Grains;

/// <summary>
/// What was returned of the member's most recently returned purchases (at most
/// <see cref="ReturnsKept"/>), by transaction id. The rest is read from the ledger when one of
/// them is returned again or looked up, and kept again only when a return of it is applied (see
/// <see cref="Record"/>), so the book stays bounded however many purchases come back. Changed
/// only through <see cref="MemberState.Apply"/>: a return that is refused leaves it as it was.
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
    /// How many purchases' return progress a member keeps in memory; at least as many as a commit
    /// group's entries (<see cref="MemberGrain.GroupEntriesMax"/>), so that returns committing
    /// together cannot forget the progress one of them was decided on (tested).
    /// </summary>
    public const int ReturnsKept = 256;

    [Id(0)] private Dictionary<string, ReturnProgress>? _progress;

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
        if (!progress.TryGetValue(purchaseId, out ReturnProgress? kept) || (seed is not null && !kept.Complete))
        {
            // A kept progress that may lack forgotten returns gives way to the complete one the
            // return was decided on: else every later return would read the ledger again, and
            // one read while this return commits would not see it.
            kept = seed ?? new ReturnProgress(details.Components.Count);
            progress[purchaseId] = kept;
        }

        kept.Touch(sequence);
        kept.Add(details);
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
            (_progress ??= new(StringComparer.Ordinal))[r.TransactionId] = ReturnProgress.Adopted(r, sequence);
        }

        ForgetOldest();
    }

    /// <summary>What a merge hands on of this book.</summary>
    public IReadOnlyList<ReturnedSoFar> Transfer() => [.. Kept.Select(r => r.Value.Transfer(r.Key))];

    /// <summary>Keeps at most <see cref="ReturnsKept"/> progresses (a snapshot of an older version may hold more).</summary>
    public void Trim() => ForgetOldest();

    /// <summary>Throws when more than <see cref="ReturnsKept"/> progresses are kept.</summary>
    public void AssertInvariants(long sequence)
    {
        if (Kept.Count > ReturnsKept)
        {
            throw new InvalidOperationException($"After entry {sequence}: {Kept.Count} purchases' return progress kept, more than {ReturnsKept}.");
        }
    }

    /// <summary>Forgets the least recently used progress while more than <see cref="ReturnsKept"/> are kept.</summary>
    private void ForgetOldest()
    {
        while (_progress is { Count: > ReturnsKept } progress)
        {
            string oldest = progress.MinBy(r => r.Value.Touched).Key;
            progress.Remove(oldest);
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
