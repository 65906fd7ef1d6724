import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;

/**
 * A pgjdbc PreparedStatement with a semantic operator and a parameter, run several times (pgjdbc switches to a
 * named server-side statement after prepareThreshold runs), then one plain statement and one in a transaction.
 *
 * Usage: java SemanticPrepared jdbc:postgresql://host:port/db user sql limit...
 * Prints, tab-separated: "type" and each column's type name; "row" limit id label price per row; "plain" value;
 * "tx" sqlstate of the statement in a transaction and of the one after it.
 */
public class SemanticPrepared {
    public static void main(String[] args) throws SQLException {
        try (Connection c = DriverManager.getConnection(args[0], args[1], "")) {
            try (PreparedStatement ps = c.prepareStatement(args[2])) {
                boolean typed = false;
                for (int i = 3; i < args.length; i++) {
                    ps.setInt(1, Integer.parseInt(args[i]));
                    try (ResultSet r = ps.executeQuery()) {
                        if (!typed) {
                            ResultSetMetaData md = r.getMetaData();
                            StringBuilder line = new StringBuilder("type");
                            for (int k = 1; k <= md.getColumnCount(); k++) {
                                line.append('\t').append(md.getColumnTypeName(k));
                            }
                            System.out.println(line);
                            typed = true;
                        }
                        while (r.next()) {
                            System.out.println("row\t" + args[i] + "\t" + r.getInt(1) + "\t" + r.getString(2) + "\t"
                                    + r.getBigDecimal(3).toPlainString());
                        }
                    }
                }
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT ?::int * 2")) {
                ps.setInt(1, 21);
                try (ResultSet r = ps.executeQuery()) {
                    r.next();
                    System.out.println("plain\t" + r.getInt(1));
                }
            }
            c.setAutoCommit(false);
            String first = "ok";
            String second = "ok";
            try (PreparedStatement ps = c.prepareStatement(args[2])) {
                ps.setInt(1, 5);
                ps.executeQuery().close();
            } catch (SQLException e) {
                first = e.getSQLState();
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT 1")) {
                ps.executeQuery().close();
            } catch (SQLException e) {
                second = e.getSQLState();
            }
            c.rollback();
            System.out.println("tx\t" + first + "\t" + second);
        }
    }
}
