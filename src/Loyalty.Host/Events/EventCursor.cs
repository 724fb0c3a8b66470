using System.Globalization;
using Loyalty.Storage;

namespace Loyalty.Host.Events;

/// <summary>
/// The text of an event's cursor: "v1.COMMIT.ROW.INDEX" — the entry's position and which of its
/// events. Opaque to clients; parsed strictly, so a cursor that was not given out is refused.
/// </summary>
public static class EventCursor
{
    /// <summary>Characters a cursor has at most.</summary>
    public const int LengthMax = 80;

    /// <summary>The cursor of the <paramref name="index"/>th event of the entry at <paramref name="position"/>.</summary>
    public static string Format(EventPosition position, int index) =>
        string.Create(CultureInfo.InvariantCulture, $"v1.{position.Commit}.{position.Row}.{index}");

    /// <summary>Parses a cursor; false when it is not one this engine gives out.</summary>
    public static bool TryParse(string text, out EventPosition position, out int index)
    {
        position = EventPosition.Start;
        index = 0;
        if (text.Length > LengthMax)
        {
            return false;
        }

        string[] parts = text.Split('.');
        if (parts.Length != 4 || parts[0] != "v1"
            || !long.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out long commit)
            || !long.TryParse(parts[2], NumberStyles.None, CultureInfo.InvariantCulture, out long row)
            || !int.TryParse(parts[3], NumberStyles.None, CultureInfo.InvariantCulture, out index)
            || index > 1)
        {
            return false;
        }

        position = new EventPosition(commit, row);
        return true;
    }

    /// <summary>
    /// Where to read from to resume after the event (<paramref name="position"/>, <paramref name="index"/>):
    /// its entry again when the entry has a later event (the caller skips the ones up to the
    /// index), else after the entry.
    /// </summary>
    public static EventPosition ReadFrom(EventPosition position, int index) =>
        index == 0 && position.Row > 0 ? position with { Row = position.Row - 1 } : position;
}
